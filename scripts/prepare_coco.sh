#!/usr/bin/env bash
# Download COCO 2017 (train and val images, instances annotations) from the official server, verify their
# MD5 sums and unpack them into <data>/coco/{train2017,val2017,annotations}: the layout data=coco reads.
#
#   bash scripts/prepare_coco.sh [--data DIR] [--dry-run]     # DIR defaults to ./data (19 GB of zips)
#
# Idempotent: verified archives are not downloaded again and unpacked archives not unpacked again.
# Then: bof-train data=coco data.root=<data>/coco
set -euo pipefail
DATA="${BOF_DATA_DIR:-data}"
source "$(dirname "$0")/download_lib.sh"
parse_args "$@"
BASE=http://images.cocodataset.org
fetch_verify_unpack "$BASE/zips/train2017.zip" cced6f7f71b7629ddf16f17bbcfab6b2 "$DATA/coco"
fetch_verify_unpack "$BASE/zips/val2017.zip" 442b8da7639aecaf257c1dceb8ba8c80 "$DATA/coco"
fetch_verify_unpack "$BASE/annotations/annotations_trainval2017.zip" f4bbac642086de4f52a3fdda2de5fa2c "$DATA/coco"
echo "COCO 2017 ready in $DATA/coco (use data.root=$DATA/coco)"
