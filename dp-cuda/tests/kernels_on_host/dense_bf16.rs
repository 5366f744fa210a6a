//! bf16 storage of the dense kernels' buffers on the host harness, against the host reference storing in bf16.
