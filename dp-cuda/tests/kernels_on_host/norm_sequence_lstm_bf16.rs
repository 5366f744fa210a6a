//! bf16 storage of the norm sequence lstm kernels' buffers on the host harness, against the host reference storing in bf16.
