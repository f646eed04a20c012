// Whole sweeps of the pattern-table spin update with the chains' state resident in a thread-block
// cluster's shared memory (see table_resident.py). The per-chain arithmetic is table_spin.cu's.
//
// A cluster of CLUSTER blocks takes CHAINS chains and runs `sweeps` sweeps without leaving the chip.
// Block `rank` holds the state rows it owns, one byte per spin and chain (UP or 0), and updates the
// nodes it owns; neighbours' rows of other blocks are read through distributed shared memory. A
// cluster barrier separates sampling groups. Each update's pattern tables, node hashes and chain
// seeds are copied from global memory into one of two staging buffers while the update before it
// runs. Clusters share nothing, so any number of them run side by side.
//
// Tables of two consecutive nodes share 256-byte chunks, one per group: bytes 0-127 the even node's
// 32 entries, bytes 128-255 the odd node's. An odd node starts its patterns at 0x80 per byte (no
// carries: 0x80 + 124 < 256), so one byte permute still makes the entry's shared address.

#define SLOTS (GROUPS * 5)
#define SLOT_STRIDE (((SLOTS + 3) / 4) * 4)  // u32 per node in the slot-address table (16-byte rows)
#define UP 4u
#define ITEM_CHAINS (4 * WORDS)              // chains of one work item (WORDS 32-bit words)
#define ITEMS_PER_NODE (CHAINS / ITEM_CHAINS)
#define PLAN_FIELDS 5                        // block (seed row), nodes, first node, barrier after, stage bytes

typedef unsigned int u32;

__device__ __forceinline__ u32 mix32_tail(u32 x) {  // mix32 after its first x ^= x >> 16
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ u32 shared_address(const void* p) { return (u32)__cvta_generic_to_shared(p); }

__device__ __forceinline__ u32 cluster_rank() {
  u32 r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

__device__ __forceinline__ u32 map_to_rank(u32 address, u32 rank) {  // a shared::cluster address
  u32 out;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(out) : "r"(address), "r"(rank));
  return out;
}

__device__ __forceinline__ void cluster_barrier() {  // release the block's writes, acquire the others'
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

template <int OFFSET>
__device__ __forceinline__ float table_at(u32 address) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1+%2];" : "=f"(v) : "r"(address), "n"(OFFSET));
  return v;
}

template <int W>
__device__ __forceinline__ void load_remote(u32 address, u32 (&w)[W]) {  // W words of a row, any block
#ifdef PROBE_PLAIN_SHARED  // diagnostic: the block's own memory through ld.shared (with PROBE_ALL_LOCAL addresses)
  if constexpr (W == 1) {
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(w[0]) : "r"(address));
    return;
  }
#endif
  if constexpr (W == 4) {
    asm volatile("ld.shared::cluster.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3]) : "r"(address));
  } else if constexpr (W == 2) {
    asm volatile("ld.shared::cluster.v2.u32 {%0, %1}, [%2];" : "=r"(w[0]), "=r"(w[1]) : "r"(address));
  } else {
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(w[0]) : "r"(address));
  }
}

template <int W>
__device__ __forceinline__ void store_local(u32 address, const u32 (&w)[W]) {
  if constexpr (W == 4) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" :: "r"(address), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
                 : "memory");
  } else if constexpr (W == 2) {
    asm volatile("st.shared.v2.u32 [%0], {%1, %2};" :: "r"(address), "r"(w[0]), "r"(w[1]) : "memory");
  } else {
    asm volatile("st.shared.u32 [%0], %1;" :: "r"(address), "r"(w[0]) : "memory");
  }
}

__device__ __forceinline__ uint4 load_shared4(u32 address) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(address));
  return v;
}

__device__ __forceinline__ u32 load_shared(u32 address) {
  u32 v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(address));
  return v;
}

__device__ __forceinline__ void copy_async(u32 to, const void* from) {  // 16 bytes, global -> shared
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(to), "l"(from) : "memory");
}

template <int G>
__device__ __forceinline__ float field_share(const u32 (&address)[GROUPS]) {  // ((T_0 + T_1) + ...) as table_spin.cu
  if constexpr (G == 0) {
    return table_at<0>(address[0]);
  } else {
    return field_share<G - 1>(address) + table_at<G * 256>(address[G]);
  }
}

struct Stage {  // one staging buffer: node pairs' tables, then hashes, then seeds
  u32 tables, hashes, seeds;
};

extern "C" __global__ void __launch_bounds__(THREADS, 1) table_resident_sweeps(
    const int* __restrict__ plan,        // [UPDATES, PLAN_FIELDS] per update of a sweep, in sampling order
    const int* __restrict__ home_rows,   // [CLUSTER, LOCAL_ROWS] flat-state row of each local row, -1 for none
    const u32* __restrict__ slots,       // [CLUSTER, NODES, SLOTS] owner << 16 | local row of each neighbour
    const float* __restrict__ tables,    // [CLUSTER, NODES / 2, GROUPS, 2, 32] node pairs' tables
    const u32* __restrict__ hashes,      // [CLUSTER, NODES] golden * node id, folded
    const u32* __restrict__ seeds,       // [sweeps, FREE_BLOCKS, chains] folded
    const unsigned char* state,          // [rows, chains], the same buffer as `out`
    unsigned char* out,
    int chains, int sweeps) {
  extern __shared__ __align__(256) unsigned char smem[];
  // layout: stage 0 | stage 1 | slot addresses [NODES, SLOT_STRIDE] | state [LOCAL_ROWS, CHAINS]
  const u32 rank = cluster_rank();
  const int chain0 = (blockIdx.x / CLUSTER) * CHAINS;
  const u32 smem0 = shared_address(smem);
  const u32 slot_table = smem0 + 2 * STAGE_BYTES;
  const u32 state_base = slot_table + NODES * SLOT_STRIDE * 4;
  const int tid = threadIdx.x;

  for (int i = tid; i < LOCAL_ROWS * (CHAINS / 4); i += THREADS) {  // this block's rows of the cluster's chains
    const int row = home_rows[rank * LOCAL_ROWS + i / (CHAINS / 4)];
    const u32 v = row < 0 ? 0u : __ldg(reinterpret_cast<const u32*>(state + (size_t)row * chains + chain0) + i % (CHAINS / 4));
    asm volatile("st.shared.u32 [%0], %1;" :: "r"(state_base + 4 * i), "r"(v) : "memory");
  }
  for (int i = tid; i < NODES * SLOT_STRIDE; i += THREADS) {  // neighbours' row addresses, any block of the cluster
    const int node = i / SLOT_STRIDE, k = i % SLOT_STRIDE;
    const u32 v = k < SLOTS ? __ldg(slots + ((size_t)rank * NODES + node) * SLOTS + k) : 0u;
#ifdef PROBE_PLAIN_SHARED
    const u32 address = state_base + ((v & 0xFFFFu) % LOCAL_ROWS) * CHAINS;
#elif defined(PROBE_ALL_LOCAL)  // diagnostic (bench/table_resident_probe.py): every row read from the block's own memory
    const u32 address = map_to_rank(state_base + ((v & 0xFFFFu) % LOCAL_ROWS) * CHAINS, rank);
#else
    const u32 address = map_to_rank(state_base + (v & 0xFFFFu) * CHAINS, v >> 16);
#endif
    asm volatile("st.shared.u32 [%0], %1;" :: "r"(slot_table + 4 * i), "r"(address) : "memory");
  }

  const int total = sweeps * UPDATES;
  auto stage_of = [&](int which) {
    const u32 base = smem0 + which * STAGE_BYTES;
    return Stage{base, base + TABLE_STAGE_BYTES, base + TABLE_STAGE_BYTES + HASH_STAGE_BYTES};
  };
  auto issue = [&](int g) {  // copy update g's tables, hashes and seeds into stage g & 1
    const int* p = plan + (g % UPDATES) * PLAN_FIELDS;
    const int nodes = p[1], first = p[2];
    const Stage stage = stage_of(g & 1);
    const unsigned char* t = reinterpret_cast<const unsigned char*>(tables) + ((size_t)rank * NODES + first) * GROUPS * 128;
    for (int i = tid; i < nodes * GROUPS * 8; i += THREADS) copy_async(stage.tables + 16 * i, t + 16 * i);
    const u32* h = hashes + (size_t)rank * NODES + first;
    for (int i = tid; i < nodes / 4; i += THREADS) copy_async(stage.hashes + 16 * i, h + 4 * i);
    const u32* s = seeds + ((size_t)(g / UPDATES) * FREE_BLOCKS + p[0]) * chains + chain0;
    for (int i = tid; i < CHAINS / 4; i += THREADS) copy_async(stage.seeds + 16 * i, s + 4 * i);
    asm volatile("cp.async.commit_group;" ::: "memory");
  };

  if (total > 0) issue(0);
  asm volatile("cp.async.wait_all;" ::: "memory");
  cluster_barrier();  // every block's rows are loaded before any block reads them

  for (int g = 0; g < total; ++g) {
#ifndef PROBE_NO_STAGE  // diagnostic: every update reads update 0's stage (wrong samples: what staging costs)
    if (g + 1 < total) issue(g + 1);
#endif
    const int* p = plan + (g % UPDATES) * PLAN_FIELDS;
    const int nodes = p[1], first = p[2];
#ifdef PROBE_NO_STAGE
    const Stage stage = stage_of(0);
#else
    const Stage stage = stage_of(g & 1);
#endif
#ifdef PROBE_NO_WORK  // diagnostic: no items (what the stages and barriers alone cost)
    if (nodes < 0)
#endif
    for (int item = tid; item < nodes * ITEMS_PER_NODE; item += THREADS) {
      const int node = item / ITEMS_PER_NODE;
      const u32 offset = (item % ITEMS_PER_NODE) * ITEM_CHAINS;  // byte offset of the item's chains in a row
      const u32 start = (node & 1) ? 0x80808080u : 0u;
      u32 pattern[GROUPS][WORDS];
      const u32 my_slots = slot_table + (first + node) * SLOT_STRIDE * 4;
#pragma unroll
      for (int q = 0; q < SLOT_STRIDE / 4; ++q) {
        const uint4 a = load_shared4(my_slots + 16 * q);
        const u32 address[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int slot = 4 * q + j;
          if (slot >= SLOTS) break;
          const int grp = slot / 5, k = slot % 5;
          u32 words[WORDS];
          load_remote<WORDS>(address[j] + offset, words);
#pragma unroll
          for (int w = 0; w < WORDS; ++w) pattern[grp][w] = (k == 0 ? start : pattern[grp][w]) + (words[w] << k);
        }
      }
      const u32 base = stage.tables + (node >> 1) * GROUPS * 256;
      const u32 hash = load_shared(stage.hashes + 4 * node);
      u32 result[WORDS];
#pragma unroll
      for (int w = 0; w < WORDS; ++w) {
        const uint4 seed = load_shared4(stage.seeds + offset * 4 + 16 * w);
        const u32 seed_of[4] = {seed.x, seed.y, seed.z, seed.w};
        u32 word = 0;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          u32 address[GROUPS];
#pragma unroll
          for (int grp = 0; grp < GROUPS; ++grp) address[grp] = __byte_perm(pattern[grp][w], base, 0x7650 + b);
#ifdef PROBE_NO_DRAW  // diagnostic: spin = sign of the field
          word |= field_share<GROUPS - 1>(address) < 0.0f ? UP << (8 * b) : 0u;
          continue;
#endif
          const float e = exp2_approx(field_share<GROUPS - 1>(address));
          const float u = fmaf((float)(mix32_tail(hash ^ seed_of[b]) >> 8), 5.9604644775390625e-08f, 2.98023223876953125e-08f);
          word |= fmaf(u, e, u) < 1.0f ? UP << (8 * b) : 0u;
        }
        result[w] = word;
      }
      store_local<WORDS>(state_base + (first + node) * CHAINS + offset, result);
    }
    asm volatile("cp.async.wait_all;" ::: "memory");
#ifdef PROBE_NO_BARRIER  // diagnostic: blocks do not wait for each other (racy: timing only)
    if (false) {
#else
    if (p[3]) {
#endif
      cluster_barrier();  // the group's writes are seen by every block; the next stage is complete
    } else {
      __syncthreads();  // the next update reads none of this one's rows; its stage is complete
    }
  }

#ifdef PROBE_NO_BARRIER
  cluster_barrier();  // no block may leave while another reads its memory
#endif
  for (int i = tid; i < NODES * (CHAINS / 4); i += THREADS) {  // the free rows back to global memory
    const int row = home_rows[rank * LOCAL_ROWS + i / (CHAINS / 4)];
    if (row >= 0) {
      const u32 v = load_shared(state_base + 4 * i);
      reinterpret_cast<u32*>(out + (size_t)row * chains + chain0)[i % (CHAINS / 4)] = v;
    }
  }
}
