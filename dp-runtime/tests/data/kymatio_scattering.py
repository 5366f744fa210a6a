import numpy as np
from kymatio.scattering2d.frontend.numpy_frontend import ScatteringNumPy2D as Scattering2D
r = np.arange(28, dtype=np.float64)[:, None]
c = np.arange(28, dtype=np.float64)[None, :]
# A digit-like test image: a ring plus a stroke, in [0, 1] (the formula is repeated in tests/scattering.rs).
ring = np.exp(-((np.sqrt((r - 13.0) ** 2 + (c - 15.0) ** 2) - 7.0) ** 2) / 4.0)
stroke = np.exp(-((r - 0.8 * c - 4.0) ** 2) / 3.0) * (c > 6) * (c < 22)
x = np.minimum(1.0, ring + stroke).astype(np.float32)
S = Scattering2D(J=2, shape=(28, 28), L=8)
out = S(x)
assert out.shape == (81, 7, 7), out.shape
with open("kymatio_scattering_j2_l8_28x28.txt", "w") as f:
    f.write("# kymatio %s numpy frontend: Scattering2D(J=2, shape=(28, 28), L=8) of the ring-and-stroke image\n" % __import__("kymatio").__version__)
    f.write("# of tests/scattering.rs; 81 channels x 7 x 7 values, one per line, channel-major\n")
    for v in out.reshape(-1):
        f.write("%.9e\n" % v)
print(out[0, :2, :3], out.max(), out.min())
