F="slow_operation\|Constant folding\|This isn't\|If you'd like\|^$\|concatenate\|The operation took\|DeprecationWarning\|return rule"
nvidia-smi --query-gpu=name --format=csv,noheader

export CUDA_VISIBLE_DEVICES=0
timeout 200 python3 bench/flips_lattice.py --L 256 512 --chains 64 --sweeps 200 2>&1 | grep -v "$F"
timeout 100 python3 bench/flips_lattice.py --L 1024 4096 --chains 4 --sweeps 1000 --kernel-only 2>&1 | grep -v "$F"
timeout 100 python3 bench/flips_lattice.py --L 1024 4096 --chains 1 --sweeps 1000 --kernel-only 2>&1 | grep -v "$F" | tail -2
timeout 100 python3 bench/multispin_tiles.py 2>&1 | grep -v "$F"
unset CUDA_VISIBLE_DEVICES
timeout 150 python3 bench/device_scaling.py --lattice 4096 --chains 8 32 --sweeps 1000 2>&1 | grep -v "$F"
export CUDA_VISIBLE_DEVICES=0
JAX_PLATFORMS=cuda,cpu timeout 260 python3 -m pytest -q -p no:cacheprovider tests/test_multispin.py tests/test_checkerboard.py tests/test_pairwise_kernels.py tests/test_batched_fast_path.py tests/test_exact_agreement.py tests/test_categorical_ebm.py 2>&1 | tail -2
