"""Where the published weights the paper starts from can be downloaded (bof never downloads them)."""

DARKNET53_CONV74_URL = "https://pjreddie.com/media/files/darknet53.conv.74"
DARKNET53_CONV74_BYTES = 162_482_580
# GluonCV's model zoo (gluoncv/model_zoo/model_store.py): <name>-<first 8 hex of sha1>.zip holds
# <name>-<hash>.params; the backbones of the paper's tables
GLUONCV_MODEL_ZOO = "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/"
GLUONCV_BACKBONES = ("darknet53-2189ea49", "resnet50_v1b-0ecdba34", "resnet101_v1d-1b2b825f")
