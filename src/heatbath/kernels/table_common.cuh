// Device helpers shared by the pattern-table kernels (table_spin.cu, table_bits.cu); the host puts
// this text in front of each kernel's source before NVRTC compiles it (table_spin._source).

#define REGION_BYTES(G) ((((G) * 128 + 255) / 256) * 256)  // table bytes per warp, a multiple of 256

typedef unsigned int u32;

__device__ __forceinline__ u32 mix32_tail(u32 x) {  // mix32 after its first x ^= x >> 16
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

// 1, which ptxas cannot see: the launches are one-dimensional (cuda_runtime: blocks of (32 * warps, 1, 1)
// threads). A multiply by it keeps an integer add or a scaled address an IMAD, on the FMA pipe, where
// ptxas would emit an IADD or a LEA on the ALU pipe, the busier one in the bit kernel (half the rate).
__device__ __forceinline__ u32 opaque_one() { return blockDim.y; }

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int OFFSET>
__device__ __forceinline__ float shared_at(u32 address) {
  float v;
  asm("ld.shared.f32 %0, [%1+%2];" : "=f"(v) : "r"(address), "n"(OFFSET));
  return v;
}

// The sum of the groups' table entries, ((T_0 + T_1) + T_2) + ...: group g's entry sits 128 g bytes
// past its address (the warp's table base with the pattern's byte offset).
template <int G, int NG>
__device__ __forceinline__ float field_share(const u32 (&address)[NG]) {
  if constexpr (G == 0) {
    return shared_at<0>(address[0]);
  } else {
    return field_share<G - 1, NG>(address) + shared_at<G * 128>(address[G]);
  }
}
