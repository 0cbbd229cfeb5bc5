#!/bin/bash
# The CUDA paths on one GPU node in under 5 minutes (the tests cover them on CPU/gloo only): a short
# training run with AMP (bf16) and channels_last, a resume from its checkpoint, evaluation, and the
# training throughput of YOLOv3 at 416; with 2+ GPUs also DDP over NCCL with sync BN and sharded
# evaluation. Prints what it ran and the numbers; exits non-zero on the first failure.
#   bash scripts/gpu_check.sh            (from the repository root, after make install)
set -euo pipefail
BOF=.venv/bin/bof-train
OUT=$(mktemp -d)
GPUS=$(.venv/bin/python -c "import torch; print(torch.cuda.device_count())")
echo "== $(.venv/bin/python -c 'import torch; print(torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "| torch", torch.__version__)')"
[ "$GPUS" -ge 1 ] || { echo "no CUDA device"; exit 1; }
COMMON=(trainer.device=cuda trainer.progress=false trainer.num_workers=8 trainer.eval_interval=2
        model.net.width=0.5 model.train_size=320 model.val_size=320)

echo "== 1 GPU: AMP + channels_last, 2 epochs on the synthetic data, then resume to epoch 3"
time $BOF "${COMMON[@]}" trainer.epochs=2 trainer.amp=bf16 trainer.channels_last=true \
    hydra.run.dir="$OUT/one"
time $BOF "${COMMON[@]}" trainer.epochs=3 trainer.amp=fp16 trainer.channels_last=true trainer.resume=true \
    hydra.run.dir="$OUT/one"
.venv/bin/python -c "import json; m = json.load(open('$OUT/one/metrics.json')); print('mAP', m['map'], 'epochs', m['epochs'])"

if [ "$GPUS" -ge 2 ]; then
    echo "== 2 GPUs: DDP over NCCL, sync BN, sharded evaluation"
    time $BOF "${COMMON[@]}" trainer.epochs=2 trainer.devices=2 syncbn=on hydra.run.dir="$OUT/two"
fi

echo "== throughput: YOLOv3 (width 1) at 416, batch 16, fp32 and AMP (scripts/bench_train.py)"
.venv/bin/python scripts/bench_train.py --iters 20 --warmup 5 trainer.device=cuda trainer.batch_size=16 \
    model.net.width=1.0 model.train_size=416
.venv/bin/python scripts/bench_train.py --iters 20 --warmup 5 trainer.device=cuda trainer.batch_size=16 \
    model.net.width=1.0 model.train_size=416 trainer.amp=bf16 trainer.channels_last=true
rm -rf "$OUT"
echo "== gpu_check: all passed"
