"""Volume rendering: render settings and their derivation, marching and compositing rays,
whole images in chunks, and frames and videos along camera paths."""
