#!/usr/bin/env bash
# Download Pascal VOC 2007 (trainval + test) and 2012 (trainval) from the official server, verify their
# MD5 sums and unpack them into <data>/VOCdevkit/{VOC2007,VOC2012}: the paper's VOC07+12 -> VOC07 split.
#
#   bash scripts/prepare_voc.sh [--data DIR] [--dry-run]      # DIR defaults to ./data (8.4 GB of tars)
#
# Idempotent: verified archives are not downloaded again and unpacked archives not unpacked again.
# Then: bof-train experiment=yolov3_voc data.root=<data>/VOCdevkit
set -euo pipefail
DATA="${BOF_DATA_DIR:-data}"
source "$(dirname "$0")/download_lib.sh"
parse_args "$@"
BASE=http://host.robots.ox.ac.uk/pascal/VOC
fetch_verify_unpack "$BASE/voc2007/VOCtrainval_06-Nov-2007.tar" c52e279531787c972589f7e41ab4ae64 "$DATA"
fetch_verify_unpack "$BASE/voc2007/VOCtest_06-Nov-2007.tar" b6e924de25625d8de591ea690078ad9f "$DATA"
fetch_verify_unpack "$BASE/voc2012/VOCtrainval_11-May-2012.tar" 6cd6e144f989b92b3379bac3b3de84fd "$DATA"
echo "Pascal VOC ready in $DATA/VOCdevkit (use data.root=$DATA/VOCdevkit)"
