# Session 20, call 7 (one GPU): call 6's compiled plan-kernel test (plan_equivalence, 120 cases, now both M-tile
# orders) ran into its 200 s timeout with nothing printed; session 7 had it pass in 29 s. Time it on 6, then 30 cases,
# with a traceback dump after 90 s if it hangs.
source notes/device/common.sh
cat > /tmp/diag.py <<'PY'
import faulthandler, sys, time
faulthandler.dump_traceback_later(90, exit=True)
import torch
from tests.fused_simulation import plan_equivalence
for n in (6, 30):
    t = time.time()
    r = plan_equivalence(cases=n, device="cuda")
    torch.cuda.synchronize()
    print(f"cases {n}: {time.time() - t:.1f} s, checked {r['checked']}, failures {r['failures'][:3]}, "
          f"overflow {r['overflow_detected']} {r['rebuilt_matches']}", flush=True)
PY
timeout 200 python /tmp/diag.py 2>&1 | grep -v Warning | tail -30
echo "exit ${PIPESTATUS[0]} ($((SECONDS-T0)) s)"
