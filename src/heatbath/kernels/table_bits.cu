// The pattern-table spin update of table_spin.cu on a state of one bit per spin and chain.
//
// State: uint32 [rows, words], words = chains / 32: bit c of word w of a row is the spin of chain
// 32 w + c (1 up). Tables, hashes, seeds and the draw are table_spin.cu's, so a chain takes exactly
// the steps it takes there; only the way its five-neighbour patterns are formed differs.
//
// A warp takes one node and 32 words (1,024 chains), one word per thread. For each group of five
// neighbour slots a thread loads the five words and puts them in rows 2..6 of eight (rows 0, 1 and 7
// zero). Read byte-wise, those rows are four 8 x 8 bit matrices (rows: slots, columns: the 8 chains
// of that byte). Transposing them in place (three rounds of block swaps, all four at once) leaves in
// byte k of row j the pattern of chain 8 k + j, shifted left by 2: the byte offset 4 p of its entry
// in the group's 32-entry table, as the byte-per-spin kernel's pattern sums give it. One byte
// permute puts it under the warp's table base, and one shared load reads the group's share.
//
// Against one byte per spin this reads an eighth of the bytes per flip, for about as many instructions
// per pattern (the transpose: about 1.4 per chain and group of five; the byte kernel's sums: 1.25).
//
// PAIR (the host sets it from table_spin.BIT_LOOP_FROM words on, for nodes of two tables or more): a
// block takes one node and first adds up its pair table, T_0[p_0] + T_1[p_1] for all 32 x 32
// patterns (the sum the byte kernel forms first, so every chain's steps stay bit-identical). Group
// 1's first slot goes in row 7 of group 0's transpose and its other four in rows 0..3 of a second
// one, so one prmt of the two pattern bytes gives the pair entry's byte offset 4 p_0 + 128 p_1: a
// permute, a load and an add fewer per flip (SASS, P(14)'s three tables: 26 instructions a chain
// against 29), for 4 KB of shared memory a block.

// mix32_tail, exp2_approx, shared_at and field_share: table_common.cuh, which the host puts first.

// Swap bit j + s of row a with bit j of row b, for every j of `mask` (one round of a transpose).
template <int S>
__device__ __forceinline__ void swap_blocks(u32& a, u32& b, u32 mask) {
  const u32 t = ((a >> S) ^ b) & mask;
  b ^= t;
  a ^= t << S;
}

// Four 8 x 8 bit matrices, one per byte of the rows a[0..7], each transposed in place.
__device__ __forceinline__ void transpose_bytes(u32 (&a)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) swap_blocks<4>(a[i], a[i + 4], 0x0F0F0F0Fu);
  swap_blocks<2>(a[0], a[2], 0x33333333u);
  swap_blocks<2>(a[1], a[3], 0x33333333u);
  swap_blocks<2>(a[4], a[6], 0x33333333u);
  swap_blocks<2>(a[5], a[7], 0x33333333u);
#pragma unroll
  for (int i = 0; i < 8; i += 2) swap_blocks<1>(a[i], a[i + 1], 0x55555555u);
}

// prmt.b32 in its default mode, where a selector nibble of 8 or more repeats bit 7 of the byte it
// names (__byte_perm keeps only the low 3 bits of each nibble): bytes below 128 give zero bytes.
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 selector) {
  u32 d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(selector));
  return d;
}

// Blocks an SM must hold. Up to three groups: 32 warps, so at most 64 registers a thread (96 uncapped with
// 4 warps, no spills either way; capped, P(14) ran 529 against 505 flips/ns at 10,240 chains on an H200).
// More groups would spill under that cap, and stay uncapped.
#ifndef PAIR
#define PAIR 0
#endif
#ifndef MIN_BLOCKS
#define MIN_BLOCKS (GROUPS <= 3 ? 32 / WARPS : 1)
#endif

extern "C" __global__ void __launch_bounds__(WARPS * 32, MIN_BLOCKS) table_bits_update(
    const int* __restrict__ rows,        // [n] flat-state row of each node, in the host's order
    const int* __restrict__ neighbours,  // [n, 5 GROUPS] flat-state rows of each node's neighbours
    const float* __restrict__ tables,    // [n, GROUPS, 32] scaled partial fields
    const u32* __restrict__ hashes,      // [n] golden * node id, folded
    const u32* __restrict__ seeds,       // [updates, 8, words, 4] seeds, folded, in bit_seed_order (see the loop)
    const u32* state,                    // [rows, words], the same buffer as `out`
    u32* out, int words, int n, int seed_row) {
  __shared__ __align__(256) unsigned char table[WARPS][REGION_BYTES(GROUPS)];
  __shared__ unsigned slot_rows[WARPS][GROUPS * 5];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int node = blockIdx.x * WARPS + warp;
  if (node >= n) return;
  float* mine = reinterpret_cast<float*>(table[warp]);
  for (int k = lane; k < GROUPS * 32; k += 32) mine[k] = tables[(size_t)node * GROUPS * 32 + k];
  for (int k = lane; k < GROUPS * 5; k += 32) slot_rows[warp][k] = neighbours[(size_t)node * GROUPS * 5 + k];
  __syncwarp();
  const u32 base = (u32)__cvta_generic_to_shared(mine);  // byte 0 is zero
#if PAIR
  // One node a block, so the tables sit at static shared addresses (the loads' uniform operand).
  static_assert(WARPS == 1 && GROUPS >= 2, "PAIR: one node a block, two groups or more");
  __shared__ __align__(1024) float pair[32 * 32];  // [p1][p0] = T0[p0] + T1[p1], the byte kernel's first sum
  {
    const float t0 = mine[lane];
#pragma unroll 8
    for (int p1 = 0; p1 < 32; ++p1) pair[p1 * 32 + lane] = t0 + mine[32 + p1];
  }
  __syncwarp();
  const u32 pair_base = (u32)__cvta_generic_to_shared(pair);
  const u32 singles_base = (u32)__cvta_generic_to_shared(table[0]);  // T2, T3, ... at 256, 384, ...
#endif
  const u32 hash = __ldg(hashes + node);
  const u32 row = __ldg(rows + node) * (u32)words;
  u32 offset[GROUPS * 5];  // rows * words < 2^32 (the host checks), so offsets are 32-bit
#pragma unroll
  for (int k = 0; k < GROUPS * 5; ++k) offset[k] = slot_rows[warp][k] * (u32)words;

  // The warp's words: blockIdx.y * 32 + lane, then every 32 * gridDim.y further (so the node's
  // table, rows and hash are read once for several words).
  for (u32 w = blockIdx.y * 32 + lane; w < (u32)words; w += 32 * gridDim.y) {
    u32 pattern[GROUPS][8];
#if PAIR
    // group 0 in rows 2..6 and group 1's first slot in row 7 (bit 7: 128 p1 & 1); group 1's other
    // slots in rows 0..3 (p1 >> 1, one byte up: 256 (p1 >> 1)). So the two bytes are 4 p0 + 128 p1.
    pattern[0][0] = pattern[0][1] = 0;
#pragma unroll
    for (int k = 0; k < 5; ++k) pattern[0][2 + k] = __ldg(state + (offset[k] + w));
    pattern[0][7] = __ldg(state + (offset[5] + w));
#pragma unroll
    for (int k = 0; k < 4; ++k) pattern[1][k] = __ldg(state + (offset[6 + k] + w));
    pattern[1][4] = pattern[1][5] = pattern[1][6] = pattern[1][7] = 0;
    transpose_bytes(pattern[0]);
    transpose_bytes(pattern[1]);
#pragma unroll
    for (int g = 2; g < GROUPS; ++g) {
#else
#pragma unroll
    for (int g = 0; g < GROUPS; ++g) {
#endif
      pattern[g][0] = pattern[g][1] = pattern[g][7] = 0;
#pragma unroll
      for (int k = 0; k < 5; ++k) pattern[g][2 + k] = __ldg(state + (offset[g * 5 + k] + w));
      transpose_bytes(pattern[g]);
    }

    // Chain 32 w + 4 q + r's seed is element r of the uint4 at q * words + w of its update's row
    // (table_spin.bit_seed_order), so a warp's lanes read 512 consecutive bytes per load. Read as
    // 32 seeds a word, each lane's load would touch a 128-byte line of its own: 32 lines a load kept
    // the L1 90% busy and bound the kernel (Nsight Compute, P(14), 10,016 chains, H200).
    const uint4* seed4 = reinterpret_cast<const uint4*>(seeds + (size_t)seed_row * words * 32) + w;
    u32 result = 0;  // chain c's bit enters at bit 0 and is shifted up by each later chain: chains go 31 .. 0
#pragma unroll
    for (int q = 7; q >= 0; --q) {  // chains 4 q + 3 .. 4 q of the word
      const uint4 seed = __ldg(seed4 + (size_t)q * words);
      const u32 seed_of[4] = {seed.x, seed.y, seed.z, seed.w};
#pragma unroll
      for (int r = 3; r >= 0; --r) {
        const int c = 4 * q + r;
#if PAIR
        const int k = c >> 3;  // selectors: byte k of each row, then bit 7 of a byte below 128 (zeros)
        float s = shared_at<0>(pair_base + prmt(pattern[0][c & 7], pattern[1][c & 7], 0xCC40 + 0x1111 * k));
#pragma unroll
        for (int g = 2; g < GROUPS; ++g)
          s += shared_at<0>(singles_base + 128 * g + prmt(pattern[g][c & 7], 0, 0x8880 + 0x1111 * k));
#else
        u32 address[GROUPS];
#pragma unroll
        for (int g = 0; g < GROUPS; ++g) address[g] = __byte_perm(pattern[g][c & 7], base, 0x7650 + (c >> 3));
        const float s = field_share<GROUPS - 1, GROUPS>(address);
#endif
#ifdef PROBE_NO_DRAW  // diagnostic: spin = sign of the field (s < 0, as the byte probe), no random word and no exp
        const u32 below = s < 0.0f ? 0x80000000u : 0u;
#else
        const float e = exp2_approx(s);
        // (bits >> 8) 2^-24 = (bits & ~255) 2^-32 exactly (24 significant bits convert exactly), and
        // the mask joins the mix's last xor in one instruction
        const u32 high = mix32_tail(hash ^ seed_of[r]) & 0xFFFFFF00u;
        const float u = fmaf((float)high, 2.3283064365386963e-10f, 2.98023223876953125e-08f);
        // u (1 + e) < 1, as one fused multiply-add; for a float t >= 0, t < 1 exactly where the
        // integer bits(t) - bits(1) is negative, so bit 31 of that difference is the new spin
        const u32 below = __float_as_uint(fmaf(u, e, u)) - 0x3F800000u;
#endif
        result = __funnelshift_l(below, result, 1);  // (result << 1) | (below >> 31)
      }
    }
    out[row + w] = result;
  }
}
