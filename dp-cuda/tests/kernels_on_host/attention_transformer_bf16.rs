//! bf16 storage of the attention transformer kernels' buffers on the host harness, against the host reference storing in bf16.
