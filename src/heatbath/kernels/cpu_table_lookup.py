"""Sixteen lookups in a 32-entry float table at once, for the CPU spin kernel (`cpu_spin_numba`).

A spin's field is the sum of its neighbour groups' table entries (`table_spin`: five neighbours a
group, their up/down pattern the index of a 32-entry table of partial fields). On a CPU the
lookup of sixteen chains' patterns is one permute instruction where the vector unit has one that
indexes two registers: AVX-512's `vpermi2ps` takes the whole table in two zmm registers. LLVM does not
turn a loop of table reads into it (it emits a gather, several times slower), so `add_table_entries`
writes the permute into the kernel's LLVM IR, with a version for each instruction set:

- AVX-512F: one `vpermi2ps` for sixteen chains;
- AVX2: four eight-entry `vpermps` and three blends for eight chains;
- anything else: sixteen scalar loads (correct everywhere; LLVM may vectorise what it can).

A lookup is a load of a float, so every version gives the same bits, and the sums that follow are
the same float adds in the same order: the chains' samples do not depend on the CPU.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from heatbath.kernels.cpu_spin import LANES, TABLE_ENTRIES

__all__ = ["LANES", "add_table_entries", "instruction_set"]

_f32, _i32, _i8, _i64 = ir.FloatType(), ir.IntType(32), ir.IntType(8), ir.IntType(64)


def instruction_set(features: str) -> str:
    """"avx512", "avx2" or "generic": which lookup a target with LLVM feature string `features`
    (e.g. "+avx2,+avx512f,-sse4a") gets."""
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    return "avx512" if "avx512f" in enabled else "avx2" if "avx2" in enabled else "generic"


def _vector(element, n: int):
    return ir.VectorType(element, n)


def _lookup_avx512(builder, table, index):
    """table[index] for 16 lanes: `vpermi2ps` reads the low five bits of each index."""
    f16 = _vector(_f32, 16)
    permute = _declare(builder, "llvm.x86.avx512.vpermi2var.ps.512", f16, [f16, _vector(_i32, 16), f16])
    halves = builder.bitcast(table, f16.as_pointer())
    low = builder.load(halves, align=4)
    high = builder.load(builder.gep(halves, [ir.Constant(_i64, 1)]), align=4)
    return builder.call(permute, [low, index, high])


def _lookup_avx2(builder, table, index):
    """table[index] for 16 lanes, eight at a time: `vpermps` picks within each eighth of the table by
    the index's low three bits, then bits 3 and 4 choose among the four eighths."""
    f8, i8x = _vector(_f32, 8), _vector(_i32, 8)
    permute = _declare(builder, "llvm.x86.avx2.permps", f8, [f8, i8x])
    eighths = builder.bitcast(table, f8.as_pointer())
    parts = [builder.load(builder.gep(eighths, [ir.Constant(_i64, k)]), align=4) for k in range(4)]
    out = []
    for half in range(2):
        lanes = ir.Constant(_vector(_i32, 8), [ir.Constant(_i32, 8 * half + k) for k in range(8)])
        idx = builder.shuffle_vector(index, ir.Constant(index.type, None), lanes)
        picked = [builder.call(permute, [part, idx]) for part in parts]
        bit3, bit4 = (_bit_set(builder, idx, b) for b in (3, 4))
        low = builder.select(bit3, picked[1], picked[0])
        high = builder.select(bit3, picked[3], picked[2])
        out.append(builder.select(bit4, high, low))
    both = ir.Constant(_vector(_i32, 16), [ir.Constant(_i32, k) for k in range(16)])
    return builder.shuffle_vector(out[0], out[1], both)


def _lookup_generic(builder, table, index):
    """table[index & 31] for 16 lanes by scalar loads (patterns have five bits; the mask makes the
    bound plain to LLVM and to a reader)."""
    value = ir.Constant(_vector(_f32, 16), None)
    for lane in range(16):
        k = builder.and_(builder.extract_element(index, ir.Constant(_i32, lane)), ir.Constant(_i32, TABLE_ENTRIES - 1))
        value = builder.insert_element(value, builder.load(builder.gep(table, [k]), align=4), ir.Constant(_i32, lane))
    return value


def _bit_set(builder, vector, bit: int):
    """Whether `bit` of each lane is set, as the sign of the lane shifted left: the form `vblendvps`
    reads, one shift where an and and a compare would be two (LLVM keeps it for one of the two
    selects' masks and turns the other back into an and and a compare)."""
    shift = ir.Constant(vector.type, [ir.Constant(_i32, 31 - bit)] * vector.type.count)
    return builder.icmp_signed("<", builder.shl(vector, shift), ir.Constant(vector.type, None))


def _declare(builder, name: str, result, arguments):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(result, arguments), name)


_LOOKUPS = {"avx512": _lookup_avx512, "avx2": _lookup_avx2, "generic": _lookup_generic}


@intrinsic
def add_table_entries(typingctx, tables, base, patterns, sums, chain, first):
    """For the LANES chains from `chain`: `sums[c] = entry` where `first`, else `sums[c] + entry`,
    entry = `tables.flat[base + patterns[c]]`.

    `tables` a C-contiguous float32 array (a row's group tables of 32 entries each, `base` the first
    entry of one), `patterns` a pointer to uint8 five-bit patterns and `sums` one to float32 field
    sums (the kernel's stack scratch, at least `chain + LANES` items)."""

    def codegen(context, builder, signature, args):
        table_array, base, patterns, sums, chain, first = args
        table = builder.gep(context.make_array(signature.args[0])(context, builder, table_array).data, [base])
        lookup = _LOOKUPS[instruction_set(getattr(context.codegen(), "_tm_features", ""))]
        pattern = builder.bitcast(builder.gep(patterns, [chain]), _vector(_i8, LANES).as_pointer())
        entries = lookup(builder, table, builder.zext(builder.load(pattern, align=1), _vector(_i32, LANES)))
        target = builder.bitcast(builder.gep(sums, [chain]), _vector(_f32, LANES).as_pointer())
        total = builder.fadd(builder.load(target, align=4), entries)
        is_first = builder.icmp_unsigned("!=", first, ir.Constant(first.type, 0))
        builder.store(builder.select(is_first, entries, total), target, align=4)
        return context.get_dummy_value()

    return types.none(tables, base, patterns, sums, chain, first), codegen
