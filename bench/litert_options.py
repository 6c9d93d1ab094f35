"""RSS after each signature's first run, per LiteRT interpreter option (issue 13, target 3).

    python bench/litert_options.py MODEL.tflite [sep|main] [AUTO|BUILTIN|BUILTIN_WITHOUT_DEFAULT_DELEGATES] [noclust]

In one process: imports, Session, `extract` (sep: on a second interpreter that is then deleted
and malloc_trim'd, as tftl-train now does; main: on the session's interpreter), 4 steps of
`train_features` (CPU ms per step printed), `infer_features`, `state()`, state.npz bytes.
Prints VmRSS / VmHWM in MiB after each. Exploration aid: the numbers in bench/TRAINER_MEMORY.md.
"""
import os, sys, gc, ctypes, time
def st():
    d={}
    for l in open('/proc/self/status'):
        if l.startswith(('VmRSS','VmHWM')): d[l.split(':')[0]]=int(l.split()[1])//1024
    return d['VmRSS'], d['VmHWM']
log=[]
def m(n): r=st(); print(f"{n:<28} rss {r[0]:5d} hwm {r[1]:5d}", flush=True)
m("start")
import numpy as np; m("numpy")
import PIL.Image; m("PIL")
from tftl.runtime import interpreter as rt
_, cls = rt._interpreter_class(); m("litert imported")
from tftl.runtime import session as S, modelfile, run as trainer, loop, features, data; m("tftl imported")
opt = sys.argv[2] if len(sys.argv)>2 else ""
res = sys.argv[3] if len(sys.argv)>3 else "AUTO"
from ai_edge_litert import interpreter as I
kw = dict(experimental_op_resolver_type=getattr(I.OpResolverType, res))
if len(sys.argv)>4: kw["experimental_disable_delegate_clustering"]=True
rt.load_interpreter = lambda content, threads: cls(model_content=bytes(content), num_threads=threads, **kw)
S.rt.load_interpreter = rt.load_interpreter
s = S.Session(sys.argv[1]); m("session")
B=s.batch; R=s.image_size
x=np.random.RandomState(0).uniform(0,255,(B,R,R,3)).astype(np.float32)
if opt=="sep":
    it=rt.load_interpreter(s.model_file.flatbuffer, None); r=it.get_signature_runner("extract"); m("sep interp")
    f=np.array(r(images=x)["features"]); f=np.array(r(images=x)["features"]); m("sep extract x2")
    del r, it; gc.collect(); m("sep deleted"); ctypes.CDLL("libc.so.6").malloc_trim(0); m("trim")
else:
    f=s.extract(x); m("extract x1")
    f=s.extract(x); m("extract x2")
print("feature shape", f.shape)
if opt=="del":
    s._runners.pop("extract",None); gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0); m("trim")
y=np.zeros(B,np.int32)
s.train_features_step(f,y,1e-4); m("train_features x1")
t=time.process_time()
for _ in range(3): s.train_features_step(f,y,1e-4)
print("train_features cpu ms", (time.process_time()-t)/3*1000)
m("train_features x4")
s.predict_features(f); m("infer_features")
st_=s.state(); m("state()")
b=modelfile.state_npz_bytes(st_); m("npz bytes")
