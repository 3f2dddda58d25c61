"""graphmnl-fused-teacher against graphmnl and the best baseline per setting, from benchmarks/graphmnl/rows.jsonl
(session 16): python benchmarks/scripts/fused_teacher_table.py"""
import collections
import json
import statistics as st

rows=[json.loads(l) for l in open('benchmarks/graphmnl/rows.jsonl')]
by=collections.defaultdict(dict)
for r in rows: by[(r['dataset'],r['split'],r['method'])][r['seed']]=r
settings=sorted({(r['dataset'],r['split']) for r in rows})
def ms(d,k): v=[100*x[k] for x in d.values()]; return st.mean(v), (st.stdev(v) if len(v)>1 else 0)
print("| setting | graphmnl test acc / F1 | graphmnl-fused-teacher test acc / F1 | best baseline (by test acc) | fused-teacher − graphmnl, val acc / F1 (paired) |")
print("| --- | --- | --- | --- | --- |")
allv={'val_acc':[], 'val_f1':[], 'test_acc':[], 'test_f1':[]}
for ds,sp in settings:
    g=by[(ds,sp,'graphmnl')]; f=by[(ds,sp,'graphmnl-fused-teacher')]
    if len(f)<5: print(ds,sp,'fused-teacher seeds',len(f)); continue
    base=[m for (d,s,m) in by if d==ds and s==sp and not m.startswith('graphmnl')]
    best=max(base,key=lambda m: ms(by[(ds,sp,m)],'test_acc')[0])
    bb=by[(ds,sp,best)]
    bestf=max(base,key=lambda m: ms(by[(ds,sp,m)],'test_f1')[0])
    d={k:[100*(f[s][k]-g[s][k]) for s in f] for k in allv}
    for k in allv: allv[k]+=d[k]
    fmt=lambda x,k: "%.2f ± %.2f"%ms(x,k)
    print(f"| {ds.split(':')[1]} {sp} | {fmt(g,'test_acc')} / {fmt(g,'test_f1')} | {fmt(f,'test_acc')} / {fmt(f,'test_f1')} | {best} {fmt(bb,'test_acc')}; F1 {bestf} {fmt(by[(ds,sp,bestf)],'test_f1')} | {st.mean(d['val_acc']):+.2f} / {st.mean(d['val_f1']):+.2f} |")
for k,v in allv.items():
    if len(v)>1: print(k, f"{st.mean(v):+.2f} ± {st.stdev(v):.2f} (n {len(v)}, t {st.mean(v)/(st.stdev(v)/len(v)**.5):.1f}, ahead {sum(x>0 for x in v)})")
