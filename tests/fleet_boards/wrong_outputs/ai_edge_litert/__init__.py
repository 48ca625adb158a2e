"""A board whose interpreter gives wrong outputs: put this folder first on PYTHONPATH (the test fleet's `wrong` and
`subtle` boards get it through their sshd's SetEnv). It imports the real ai_edge_litert in its place, with every
output tensor read through `get_tensor` perturbed, as a miscompiled delegate or a broken board would: grossly (noise
the size of the output's peak), or with EDGERT_TEST_PERTURB=subtle, subtly (one element of each output off by 5% of
the output's range, as a kernel that rounds one channel wrong would be; its cosine stays above 0.99)."""

import os
import sys

_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
for _name in [m for m in sys.modules if m == __name__ or m.startswith(__name__ + ".")]:
    del sys.modules[_name]

import numpy as _np  # noqa: E402

import ai_edge_litert.interpreter as _real  # noqa: E402  (the real package, now first on the path)

_get_tensor = _real.Interpreter.get_tensor


def _perturbed(self, index, *args, **kwargs):
    out = _get_tensor(self, index, *args, **kwargs)
    if index in {d["index"] for d in self.get_output_details()}:
        dtype = out.dtype
        if os.environ.get("EDGERT_TEST_PERTURB") == "subtle":
            noise = _np.zeros(out.shape)
            span = float(out.max()) - float(out.min())
            noise.flat[int(_np.argmax(out))] = -0.05 * (span or 1.0)  # the largest element, 5% of the range lower
        else:
            noise = _np.random.default_rng(index).normal(0, float(_np.abs(out).max()) + 1.0, out.shape)
        info = _np.iinfo(dtype) if dtype.kind in "iu" else None
        out = (_np.clip(out + noise, info.min, info.max) if info else out + noise).astype(dtype)
    return out


_real.Interpreter.get_tensor = _perturbed
