// One free block of spins resampled with the field read from per-node pattern tables (see table_spin.py).
//
// State: uint8 [rows, chains], one byte per spin and chain, chains contiguous: UP (4) for spin up,
// 0 for down. Node i's neighbours come in GROUPS groups of 5 slots; its table holds, for each group g
// and each 5-bit pattern p of those neighbours' spins, c * sum_k J_ik (2 p_k - 1), c = -2 log2(e),
// node i's bias folded into group 0. So 2^(T_0[p_0] + ...) = exp(-2 field).
//
// A warp takes one node and 128 * WORDS chains; each thread 4 * WORDS consecutive chains. For every
// slot it loads WORDS 32-bit words (4 chains each) of the neighbour's row; 5 slots add into one word
// of 4 pattern bytes, sum_k s_k << k = 4p (no carries: each byte stays below 128), which is p's byte
// offset in the group's table. One byte permute puts that byte under the warp's table base (a
// multiple of 256), giving the shared-memory address; group g's entry sits 128 g bytes further.
// Each chain then draws mix32(golden * id ^ seed), the word of every other spin kernel of heatbath
// (the host passes hash and seed already folded, x ^ (x >> 16), which distributes over xor), and
// takes spin up where u * (1 + exp(-2 field)) < 1. Blocks hold WARPS nodes that share many
// neighbours (the host orders them), so their loads meet in L1.
//
// `table_spin_update` updates one block. `table_spin_update_pair` (built where PAIR_GROUPS and
// PAIR_WORDS are defined) updates one block of each of two independent runs in one launch, each
// with its own state, tables and seeds (the two phases of a training gradient): thread blocks
// below `blocks_a` take run A's nodes, the rest run B's, each with exactly the arithmetic of a
// launch of its own. With few chains a launch is a couple of microseconds of latency, so two runs
// of one launch each cost about one.

// mix32_tail, exp2_approx, shared_at and field_share: table_common.cuh, which the host puts first.

#define UP 4u

template <int W>
__device__ __forceinline__ void load_words(const unsigned char* p, u32 (&w)[W]) {
  if constexpr (W % 4 == 0) {
#pragma unroll
    for (int q = 0; q < W / 4; ++q) {
      uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + q);
      w[4 * q] = v.x; w[4 * q + 1] = v.y; w[4 * q + 2] = v.z; w[4 * q + 3] = v.w;
    }
  } else if constexpr (W == 2) {
    uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = v.x; w[1] = v.y;
  } else {
    w[0] = __ldg(reinterpret_cast<const u32*>(p));
  }
}

template <int W>
__device__ __forceinline__ void store_words(unsigned char* p, const u32 (&w)[W]) {
  if constexpr (W % 4 == 0) {
#pragma unroll
    for (int q = 0; q < W / 4; ++q)
      reinterpret_cast<uint4*>(p)[q] = make_uint4(w[4 * q], w[4 * q + 1], w[4 * q + 2], w[4 * q + 3]);
  } else if constexpr (W == 2) {
    *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  } else {
    *reinterpret_cast<u32*>(p) = w[0];
  }
}

// One node (this warp's of thread block `block`) of one run, for this thread's chains of blockIdx.y:
// NG groups, NW words a thread. `region`: the warp's table bytes in shared memory; `slot_rows`: its
// SLOTS slot rows.
template <int NG, int NW>
__device__ __forceinline__ void update_node(
    const int* __restrict__ rows,        // [n] flat-state row of each node, in the host's order
    const int* __restrict__ neighbours,  // [n, SLOTS] flat-state rows of each node's neighbours
    const float* __restrict__ tables,    // [n, NG, 32] scaled partial fields
    const u32* __restrict__ hashes,      // [n] golden * node id, folded
    const u32* __restrict__ seeds,       // [updates, chains] seeds of each chain, folded; this update's row
    const unsigned char* state,          // [rows, chains], the same buffer as `out`
    unsigned char* out, int chains, int n, int seed_row, int block, unsigned char* region, unsigned* slot_rows) {
  constexpr int SLOTS = NG * 5;
  const int lane = threadIdx.x & 31;
  const int node = block * WARPS + (threadIdx.x >> 5);
  if (node >= n) return;
  float* mine = reinterpret_cast<float*>(region);
  for (int k = lane; k < NG * 32; k += 32) mine[k] = tables[(size_t)node * NG * 32 + k];
#ifdef PROBE_SAME_ROWS  // diagnostic (bench/table_spin_probe.py): every node reads node 0's rows, all L1 hits
  for (int k = lane; k < SLOTS; k += 32) slot_rows[k] = neighbours[k];
#else
  for (int k = lane; k < SLOTS; k += 32) slot_rows[k] = neighbours[(size_t)node * SLOTS + k];
#endif
  __syncwarp();
  const int chain0 = (blockIdx.y * 32 + lane) * (4 * NW);
  if (chain0 >= chains) return;
  const u32 base = (u32)__cvta_generic_to_shared(mine);  // byte 0 is zero
  const unsigned char* column = state + chain0;  // this thread's chains in row 0

  u32 pattern[NG][NW];
#pragma unroll
  for (int g = 0; g < NG; ++g) {
#pragma unroll
    for (int w = 0; w < NW; ++w) pattern[g][w] = 0;
#pragma unroll
    for (int k = 0; k < 5; ++k) {
      u32 words[NW];
      load_words<NW>(column + (size_t)slot_rows[g * 5 + k] * (unsigned)chains, words);
#pragma unroll
      for (int w = 0; w < NW; ++w) pattern[g][w] += words[w] << k;
    }
  }

  const u32 hash = __ldg(hashes + node);
  u32 result[NW];
#pragma unroll
  for (int w = 0; w < NW; ++w) {
    const uint4 seed = __ldg(reinterpret_cast<const uint4*>(seeds + (size_t)seed_row * chains + chain0 + 4 * w));
    const u32 seed_of[4] = {seed.x, seed.y, seed.z, seed.w};
    u32 word = 0;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      u32 address[NG];
#pragma unroll
      for (int g = 0; g < NG; ++g) address[g] = __byte_perm(pattern[g][w], base, 0x7650 + b);
      const float s = field_share<NG - 1, NG>(address);
#ifdef PROBE_NO_DRAW  // diagnostic: spin = sign of the field, no random word and no exp
      word |= s < 0.0f ? UP << (8 * b) : 0u;
#else
      const float e = exp2_approx(s);
#ifdef PROBE_FLOAT_UNIFORM  // diagnostic: u from the word's bits as a float in [1, 2), no conversion
      const float one_u = __int_as_float(0x3F800000u | (mix32_tail(hash ^ seed_of[b]) >> 9));
      word |= fmaf(one_u, 1.0f + e, -e) < 2.0f ? UP << (8 * b) : 0u;
#else
#ifdef PROBE_HALF_DRAW  // diagnostic: one word per two chains, 16 bits each (no tie fallback)
      const u32 pair = mix32_tail(hash ^ seed_of[b & 2]);
      const u32 bits = (b & 1) ? (pair & 0xFFFF0000u) : (pair << 16);
#else
      const u32 bits = mix32_tail(hash ^ seed_of[b]);
#endif
      // u = (v + 1/2) 2^-24 and u (1 + e) < 1, each as one fused multiply-add (the jax.numpy twin
      // rounds (v + 1/2) and 1 + e separately: they differ at near-ties only)
      const float u = fmaf((float)(bits >> 8), 5.9604644775390625e-08f, 2.98023223876953125e-08f);
      word |= fmaf(u, e, u) < 1.0f ? UP << (8 * b) : 0u;
#endif
#endif
    }
    result[w] = word;
  }
  store_words<NW>(out + (size_t)__ldg(rows + node) * chains + chain0, result);
}

#define RUN_PARAMETERS(X)                                                                                      \
  const int* __restrict__ rows##X, const int* __restrict__ neighbours##X, const float* __restrict__ tables##X, \
      const u32* __restrict__ hashes##X, const u32* __restrict__ seeds##X, const unsigned char* state##X
#define RUN_ARGUMENTS(X) rows##X, neighbours##X, tables##X, hashes##X, seeds##X, state##X

extern "C" __global__ void __launch_bounds__(WARPS * 32) table_spin_update(
    RUN_PARAMETERS(), unsigned char* out, int chains, int n, int seed_row) {
  __shared__ __align__(256) unsigned char table[WARPS][REGION_BYTES(GROUPS)];
  __shared__ unsigned slot_rows[WARPS][GROUPS * 5];
  const int warp = threadIdx.x >> 5;
  update_node<GROUPS, WORDS>(RUN_ARGUMENTS(), out, chains, n, seed_row, blockIdx.x, table[warp], slot_rows[warp]);
}

#ifdef PAIR_GROUPS
#define MOST_GROUPS (GROUPS > PAIR_GROUPS ? GROUPS : PAIR_GROUPS)

extern "C" __global__ void __launch_bounds__(WARPS * 32) table_spin_update_pair(
    RUN_PARAMETERS(_a), RUN_PARAMETERS(_b), unsigned char* out_a, unsigned char* out_b,
    int chains_a, int n_a, int seed_row_a, int chains_b, int n_b, int seed_row_b, int blocks_a) {
  __shared__ __align__(256) unsigned char table[WARPS][REGION_BYTES(MOST_GROUPS)];
  __shared__ unsigned slot_rows[WARPS][MOST_GROUPS * 5];
  const int warp = threadIdx.x >> 5;
  if ((int)blockIdx.x < blocks_a) {
    update_node<GROUPS, WORDS>(RUN_ARGUMENTS(_a), out_a, chains_a, n_a, seed_row_a, blockIdx.x, table[warp],
                               slot_rows[warp]);
  } else {
    update_node<PAIR_GROUPS, PAIR_WORDS>(RUN_ARGUMENTS(_b), out_b, chains_b, n_b, seed_row_b, blockIdx.x - blocks_a,
                                         table[warp], slot_rows[warp]);
  }
}
#endif
