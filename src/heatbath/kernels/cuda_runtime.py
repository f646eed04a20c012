"""CUDA C kernels inside jitted JAX code: NVRTC compiles the source, jaxlib's kernel-call target launches it.

Pallas (Triton) does not let a kernel choose its registers' layout, byte permutes or shared-memory
tables, which is what a per-node pattern-table field needs (`table_spin`). Such kernels are written
in CUDA C here instead, and reach XLA without any compiled extension of ours:

1. NVRTC (`libnvrtc`, shipped in the `nvidia-cuda-nvrtc-cu12` wheel that the CUDA builds of JAX and
   PyTorch install) compiles the source to PTX for the device's compute capability, once per source
   and set of defines;
2. jaxlib's GPU plugin already holds a custom-call target that loads a PTX module and launches one
   of its kernels on XLA's stream ("triton_kernel_call_ffi", the target behind jax-triton). The call
   is described by a serialized `TritonKernelCall`: kernel name, warps per block, grid, and one
   parameter per operand and result (device pointers, in that order) followed by static scalars.

So a kernel here is an `extern "C" __global__` function whose parameters are the operands' pointers,
then the results' pointers, then int32 scalars; a block has `32 * num_warps` threads. Results may
alias operands (`aliases`, operand index -> result index) for in-place updates.

`nvrtc_available()` says whether this machine can compile; callers pick another kernel otherwise.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import sys
import zlib

import jax
import numpy as np

from heatbath.errors import HeatbathError

__all__ = ["nvrtc_available", "nvrtc_version", "compile_ptx", "cuda_call", "compute_capability", "multiprocessor_count",
           "shared_bytes_limit"]

TARGET = "triton_kernel_call_ffi"


def _nvrtc_candidates() -> list[str]:
    """Paths where libnvrtc may be: the pip wheel's folder on sys.path, then CUDA_HOME, then the loader."""
    found = []
    for entry in sys.path:
        found += sorted(glob.glob(os.path.join(entry, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
        found += sorted(glob.glob(os.path.join(entry, "nvidia", "cu*", "lib", "libnvrtc.so*")))
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            found += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")))
    found = [p for p in found if "builtins" not in os.path.basename(p)]
    return found + ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]


@functools.cache
def _nvrtc():
    """The loaded NVRTC library, or None. Its builtins library (same folder) is loaded first, globally,
    so NVRTC finds it whatever the loader path."""
    for path in _nvrtc_candidates():
        try:
            folder = os.path.dirname(path)
            for builtins in sorted(glob.glob(os.path.join(folder, "libnvrtc-builtins.so*"))) if folder else []:
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(path)
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            return lib
        except OSError:
            continue
    return None


@functools.cache
def nvrtc_available() -> bool:
    """Whether CUDA C can be compiled here for the first CUDA device and launched. Call it only where
    a CUDA device exists. False when the environment variable HEATBATH_CUDA_C is 0, when NVRTC or
    jaxlib's CUDA kernel-call target is missing, when NVRTC cannot target the device, or when NVRTC
    belongs to a newer CUDA major version than the driver (NVRTC 13 on a CUDA 12 driver: install
    `nvidia-cuda-nvrtc-cu12` to use the CUDA C kernels there). Within one major version CUDA's minor
    version compatibility applies; should a driver still refuse the PTX, HEATBATH_CUDA_C=0 or
    `method="tensor"` / `"gather"` avoids it."""
    if os.environ.get("HEATBATH_CUDA_C", "1") == "0" or _nvrtc() is None or _kernel_call_lib() is None:
        return False
    driver = _driver_version()
    if driver is not None and nvrtc_version() // 1000 > driver // 1000:
        return False
    try:
        compile_ptx(_PROBE, "probe.cu", (), compute_capability())
    except Exception:  # noqa: BLE001 - an NVRTC too old for this GPU, a broken install: use another kernel
        return False
    return True


def nvrtc_version() -> int:
    """NVRTC's CUDA version as 1000·major + 10·minor (the driver's encoding: 12090 for 12.9)."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    _nvrtc().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return 1000 * major.value + 10 * minor.value


def _driver_version() -> int | None:
    """The CUDA version the driver supports (cuDriverGetVersion), or None where it cannot be read."""
    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)):
            return None
        return version.value
    except (OSError, AttributeError):
        return None


_PROBE = 'extern "C" __global__ void probe(int* x) { x[threadIdx.x] += 1; }\n'


@functools.cache
def _kernel_call_lib():
    try:
        from jax._src.lib import gpu_triton
    except ImportError:
        return None
    return gpu_triton if hasattr(gpu_triton, "TritonKernelCall") else None


@functools.cache
def _device_attribute(code: int) -> int:
    """CUDA device attribute `code` (cuDeviceGetAttribute) of the first CUDA device."""
    cuda = ctypes.CDLL("libcuda.so.1")
    device, value = ctypes.c_int(), ctypes.c_int()
    if cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(device), 0) or cuda.cuDeviceGetAttribute(ctypes.byref(value), code, device):
        raise HeatbathError(f"the CUDA driver could not report device attribute {code}")
    return value.value


def multiprocessor_count() -> int:
    """The number of SMs of the first CUDA device (132 on an H100/H200 SXM)."""
    return _device_attribute(16)  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT


def shared_bytes_limit() -> int:
    """The most shared memory a block of the first CUDA device may opt in to (227 KB on an H100/H200)."""
    return _device_attribute(97)  # CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN


def compute_capability() -> int:
    """The compute capability of the first CUDA device as major·10 + minor (90 on an H100/H200)."""
    return int(_kernel_call_lib().get_compute_capability(0))


def _check(lib, code: int, what: str, log: str = "") -> None:
    if code:
        raise HeatbathError(f"NVRTC {what} failed: {lib.nvrtcGetErrorString(code).decode()}\n{log}")


@functools.cache
def compile_ptx(source: str, name: str, defines: tuple[tuple[str, int], ...], arch: int) -> str:
    """PTX of CUDA C `source` for compute capability `arch` with `-D` `defines`, remembered per input."""
    lib = _nvrtc()
    if lib is None:
        raise HeatbathError("CUDA C kernels need NVRTC (pip install nvidia-cuda-nvrtc-cu12, which JAX's CUDA "
                            "install usually brings); use method='auto' to pick another kernel.")
    program = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), 0, None, None), "create")
    options = [f"--gpu-architecture=compute_{arch}", "--std=c++17", *(f"-D{k}={v}" for k, v in defines)]
    array = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
    try:
        code = lib.nvrtcCompileProgram(program, len(options), array)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
        _check(lib, code, f"compilation of {name}", log.value.decode(errors="replace"))
        lib.nvrtcGetPTXSize(program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(program, ptx), "PTX")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))
    return ptx.value.decode()


def _abstract(*args, out_types, **_):
    return [jax.core.ShapedArray(shape, np.dtype(dtype)) for shape, dtype in out_types]


def _lowering(ctx, *args, ptx, name, grid, num_warps, shared_bytes, out_types, aliases, scalars):
    lib = _kernel_call_lib()
    # above 48 KB the target opts the kernel in to the device's whole shared memory a block
    kernel = lib.TritonKernel(name, num_warps, 1, shared_bytes, ptx, "", compute_capability())
    params = [lib.create_array_parameter(0, 16) for _ in range(len(args) + len(out_types))]
    params += [lib.create_scalar_parameter(int(value), "i32") for value in scalars]
    call = lib.TritonKernelCall(kernel, *grid, params)
    rule = jax.ffi.ffi_lowering(TARGET, api_version=4, operand_output_aliases=dict(aliases))
    return rule(ctx, *args, opaque=zlib.compress(call.to_proto(name, b"")))


def _batched(primitive, args, dims, **params):
    """vmap of a kernel call: one call per batch element, in a loop (`lax.map`). The kernels here
    already take every chain of a call; a batch of calls arises only from nested vmaps."""
    mapped = [i for i, d in enumerate(dims) if d is not None]  # None: not batched
    moved = [jax.numpy.moveaxis(args[i], dims[i], 0) for i in mapped]

    def one(values):
        full = list(args)
        for i, value in zip(mapped, values):
            full[i] = value
        return primitive.bind(*full, **params)

    outs = jax.lax.map(one, moved)
    return outs, [0] * len(outs)


@functools.cache
def _primitive():
    from jax.extend.core import Primitive
    from jax.interpreters import batching, mlir

    primitive = Primitive("heatbath_cuda_call")
    primitive.multiple_results = True
    primitive.def_abstract_eval(_abstract)
    primitive.def_impl(lambda *args, **params: jax.jit(lambda *a: primitive.bind(*a, **params))(*args))
    mlir.register_lowering(primitive, _lowering, platform="cuda")
    batching.primitive_batchers[primitive] = functools.partial(_batched, primitive)
    return primitive


def cuda_call(
    ptx: str,
    name: str,
    args: list,
    out_types: list[tuple[tuple[int, ...], str]],
    *,
    grid: tuple[int, int, int],
    num_warps: int,
    scalars: tuple[int, ...] = (),
    aliases: dict[int, int] | None = None,
    shared_bytes: int = 0,
) -> list:
    """Launch kernel `name` of `ptx` on `grid` blocks of `32 * num_warps` threads; returns the results.

    The kernel's parameters are `args`' device pointers, then one pointer per result of `out_types`
    (shape, dtype name), then `scalars` as int32. `aliases` maps an operand index to the result that
    reuses its buffer (what the kernel does not write keeps the operand's values). `shared_bytes`:
    the block's dynamic shared memory (`extern __shared__`), up to the device's opt-in limit."""
    if not (0 < grid[0] < 2**31 and 0 < grid[1] < 2**16 and 0 < grid[2] < 2**16):
        raise HeatbathError(f"a CUDA grid holds 1 to 2**31 - 1 blocks along x and 1 to 65,535 along y and z; got {grid}.")
    return _primitive().bind(
        *args, ptx=ptx, name=name, grid=tuple(int(g) for g in grid), num_warps=int(num_warps),
        shared_bytes=int(shared_bytes),
        out_types=tuple((tuple(map(int, s)), str(np.dtype(d))) for s, d in out_types),
        aliases=tuple(sorted((aliases or {}).items())), scalars=tuple(int(s) for s in scalars),
    )
