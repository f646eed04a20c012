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
// one, so one prmt of the two pattern bytes gives the pair entry's byte offset 4 (p_0 ^ p_1) + 128 p_1
// (the xor, taken on the words before the transpose, spreads the loads over the banks: see FULL): a
// permute, a load and an add fewer per flip (SASS, P(14)'s three tables: 26 instructions a chain
// against 29), for 4 KB of shared memory a block.
//
// FULL (from the same chain count, nodes of three tables): the whole field of all 2^15 patterns in
// one table of 128 KB, a persistent kernel of its own (table_bits_full_update, at the end).

// mix32_tail, opaque_one, exp2_approx, shared_at and field_share: table_common.cuh, which the host puts first.

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

// The new spins of word w (bit c: chain 32 w + c) from each chain's field share sum field_of(c) (c is
// a constant once the loops are unrolled), the node's folded hash and the chains' seeds: the draw
// of table_spin.cu, spin up where u (1 + 2^s) < 1.
template <class FieldOf>
__device__ __forceinline__ u32 new_spins(const u32* __restrict__ seeds, int words, u32 w, int seed_row, u32 hash,
                                         FieldOf field_of) {
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
      const float s = field_of(4 * q + r);
#ifdef PROBE_NO_DRAW  // diagnostic: spin = sign of the field (s < 0, as the byte probe), no random word and no exp
      const u32 below = s < 0.0f ? 0x80000000u : 0u;
#else
      const float e = exp2_approx(s);
      // (bits >> 8) 2^-24 = (bits & ~255) 2^-32 exactly (24 significant bits convert exactly), and
      // the mask joins the mix's last xor in one instruction
      const u32 high = mix32_tail(hash ^ seed_of[r]) & 0xFFFFFF00u;
      const float u = fmaf((float)high, 2.3283064365386963e-10f, 2.98023223876953125e-08f);
      // u (1 + e) < 1, as one fused multiply-add; for a float t >= 0, t < 1 exactly where the
      // integer bits(t) - bits(1) is negative, so bit 31 of that difference is the new spin (an IMAD
      // by opaque_one, on the FMA pipe: table_common.cuh)
      const u32 below = __float_as_uint(fmaf(u, e, u)) * opaque_one() - 0x3F800000u;
#endif
      result = __funnelshift_l(below, result, 1);  // (result << 1) | (below >> 31)
    }
  }
  return result;
}

#ifndef PAIR
#define PAIR 0
#endif
#ifndef FULL
#define FULL 0
#endif
#ifndef PAIR_PLAIN  // diagnostic: the pair table indexed by 32 p1 + p0 itself (its bank p0)
#define PAIR_PLAIN 0
#endif
#ifndef FULL_WARPS
#define FULL_WARPS 32
#endif
// Blocks an SM must hold. Up to three groups: 32 warps, so at most 64 registers a thread (96 uncapped with
// 4 warps, no spills either way; capped, P(14) ran 529 against 505 flips/ns at 10,240 chains on an H200).
// More groups would spill under that cap, and stay uncapped.
#ifndef MIN_BLOCKS
#define MIN_BLOCKS (GROUPS <= 3 ? 32 / WARPS : 1)
#endif

#if !FULL  // FULL compiles table_bits_full_update alone (below)
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
  // [p1][p0 ^ p1] = T0[p0] + T1[p1], the byte kernel's first sum: row p1's entries permuted so that a
  // load's bank, the low five bits of its index, is p0 ^ p1 (as the full table's, below)
  __shared__ __align__(1024) float pair[32 * 32];
#pragma unroll 8
  for (int p1 = 0; p1 < 32; ++p1) pair[p1 * 32 + (lane ^ (PAIR_PLAIN ? 0 : p1))] = mine[lane] + mine[32 + p1];
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
    // slots in rows 0..3 (p1 >> 1, one byte up: 256 (p1 >> 1)). So the two bytes are 4 (p0 ^ p1) + 128 p1.
    pattern[0][0] = pattern[0][1] = 0;
#pragma unroll
    for (int k = 0; k < 5; ++k) pattern[0][2 + k] = __ldg(state + (offset[k] + w));
    pattern[0][7] = __ldg(state + (offset[5] + w));
#pragma unroll
    for (int k = 0; k < 4; ++k) pattern[1][k] = __ldg(state + (offset[6 + k] + w));
    pattern[1][4] = pattern[1][5] = pattern[1][6] = pattern[1][7] = 0;
#if !PAIR_PLAIN
    pattern[0][2] ^= pattern[0][7];  // rows 2..6 hold p0 ^ p1: slot 5 + k into slot k
#pragma unroll
    for (int k = 0; k < 4; ++k) pattern[0][3 + k] ^= pattern[1][k];
#endif
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

    out[row + w] = new_spins(seeds, words, w, seed_row, hash, [&](int c) {
#if PAIR
      const int k = c >> 3;  // selectors: byte k of each row, then bit 7 of a byte below 128 (zeros)
      float s = shared_at<0>(pair_base + prmt(pattern[0][c & 7], pattern[1][c & 7], 0xCC40 + 0x1111 * k));
#pragma unroll
      for (int g = 2; g < GROUPS; ++g)
        s += shared_at<0>(singles_base + 128 * g + prmt(pattern[g][c & 7], 0, 0x8880 + 0x1111 * k));
      return s;
#else
      u32 address[GROUPS];
#pragma unroll
      for (int g = 0; g < GROUPS; ++g) address[g] = __byte_perm(pattern[g][c & 7], base, 0x7650 + (c >> 3));
      return field_share<GROUPS - 1, GROUPS>(address);
#endif
    });
  }
}
#endif

// FULL (the host sets it from table_spin.BIT_LOOP_FROM words on, for nodes of three tables): the
// block's shared memory holds the node's whole field for each of the 2^15 patterns of its 15 slots,
// F[p] = (T_0[p_0] + T_1[p_1]) + T_2[p_2] (p_g = (p >> 5 g) & 31), the byte kernel's sum in its
// order, so every chain's steps stay bit-identical. Slots 0..7 go in the rows of one transpose and
// slots 8..14 in rows 0..6 of a second (row 7 zero), so one prmt of the two pattern bytes gives the
// entry and one shared load reads it: two transposes instead of three, and a permute, a load and an
// add fewer per flip than the pair form.
//
// F[p] sits at index i = p with its low five bits replaced by p_0 ^ p_1 ^ p_2 (a bijection), the
// xor taken on the neighbour words before the transpose (which is linear over GF(2)): five xors a
// word. The low five bits pick the shared-memory bank, so lanes whose chains agree on slots 0..4 but
// not on the others no longer all queue on one bank. Indexed by p itself, after some sweeps of the
// probe's model (biases N(0, 1): most spins mostly follow their bias) a load of the table took 7
// wavefronts on average, and the kernel ran at 673 against the pair form's 907 flips/ns (Nsight
// Compute, P(14), 262,144 chains, H200: 54 million bank conflicts a colour update).
//
// 128 KB a block leave room for one block an SM, so a block holds FULL_WARPS (32) warps and the grid
// is one block per SM (B blocks). A pass is one word a thread, FULL_THREADS words. In generation g
// block b takes node g B + b, all its passes: the B blocks sweep the words of B neighbouring nodes
// side by side, so the rows they read are shared in L2 (given node-major ranges instead, the blocks
// sweep different words at once and each reads its rows from DRAM). The last n mod B nodes' passes
// are split evenly over the blocks, so every block gets the same share of work, with no tail wave.
#if FULL
#define FULL_SLOTS 15
#define FULL_THREADS (FULL_WARPS * 32)
static_assert(GROUPS == 3, "FULL: nodes of three tables (15 slots)");

// Passes from .. to - 1 of `node`: the block rebuilds the field table (after every warp is done with
// the last one), then each thread updates one word a pass.
__device__ __forceinline__ void full_passes(
    float* field, const int* __restrict__ rows, const int* __restrict__ neighbours, const float* __restrict__ tables,
    const u32* __restrict__ hashes, const u32* __restrict__ seeds, const u32* state, u32* out, int words,
    int seed_row, int node, u32 from, u32 to) {
  __syncthreads();
  const float* t = tables + (size_t)node * GROUPS * 32;
#pragma unroll
  for (u32 j = 0; j < (1u << FULL_SLOTS) / 4 / FULL_THREADS; ++j) {  // entries 4 i .. 4 i + 3
    const u32 i = j * FULL_THREADS + threadIdx.x, p1 = (i >> 3) & 31, p2 = i >> 8, mixed = p1 ^ p2;
    const float t1 = __ldg(t + 32 + p1), t2 = __ldg(t + 64 + p2);
    float v[4];
#pragma unroll
    for (u32 m = 0; m < 4; ++m) v[m] = (__ldg(t + (((4 * i + m) & 31) ^ mixed)) + t1) + t2;
    reinterpret_cast<float4*>(field)[i] = make_float4(v[0], v[1], v[2], v[3]);
  }
  const u32 hash = __ldg(hashes + node), row = __ldg(rows + node) * (u32)words;
  u32 offset[FULL_SLOTS];
#pragma unroll
  for (int k = 0; k < FULL_SLOTS; ++k) offset[k] = __ldg(neighbours + (size_t)node * FULL_SLOTS + k) * (u32)words;
  const u32 field_base = (u32)__cvta_generic_to_shared(field), four = 4 * opaque_one();
  __syncthreads();
  for (u32 w = from * FULL_THREADS + threadIdx.x; w < min(to * FULL_THREADS, (u32)words); w += FULL_THREADS) {
    u32 low[8], high[8];  // slots 0..7 and 8..14 (row 7 zero), then each transposed
#pragma unroll
    for (int k = 0; k < 8; ++k) low[k] = __ldg(state + (offset[k] + w));
#pragma unroll
    for (int k = 0; k < 7; ++k) high[k] = __ldg(state + (offset[8 + k] + w));
    high[7] = 0;
#pragma unroll
    for (int k = 0; k < 5; ++k) low[k] ^= (k < 3 ? low[5 + k] : high[k - 3]) ^ high[2 + k];  // p_0 ^ p_1 ^ p_2
    transpose_bytes(low);
    transpose_bytes(high);
    out[row + w] = new_spins(seeds, words, w, seed_row, hash, [&](int c) {
      const int k = c >> 3;  // byte k of each row: i = low byte | high byte << 8, then two zero bytes
      return shared_at<0>(field_base + prmt(low[c & 7], high[c & 7], 0xCC40 + 0x1111 * k) * four);
    });
  }
}

extern "C" __global__ void __launch_bounds__(FULL_THREADS, 1) table_bits_full_update(
    const int* __restrict__ rows, const int* __restrict__ neighbours, const float* __restrict__ tables,
    const u32* __restrict__ hashes, const u32* __restrict__ seeds, const u32* state, u32* out, int words, int n,
    int seed_row) {
  extern __shared__ __align__(16) float field[];  // [2^15]: the field of each pattern of the 15 slots
  const u32 passes = (words + FULL_THREADS - 1) / FULL_THREADS, generations = n / gridDim.x;
  for (u32 g = 0; g < generations; ++g)
    full_passes(field, rows, neighbours, tables, hashes, seeds, state, out, words, seed_row,
                g * gridDim.x + blockIdx.x, 0, passes);
  const unsigned long long rest = (unsigned long long)(n - generations * gridDim.x) * passes;
  const unsigned long long end = rest * (blockIdx.x + 1) / gridDim.x;
  for (unsigned long long item = rest * blockIdx.x / gridDim.x; item < end;) {  // (node, pass), node-major
    const u32 from = (u32)(item % passes), to = (u32)min((unsigned long long)passes, from + (end - item));
    full_passes(field, rows, neighbours, tables, hashes, seeds, state, out, words, seed_row,
                (int)(generations * gridDim.x + item / passes), from, to);
    item += to - from;
  }
}
#endif
