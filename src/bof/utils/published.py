"""Where the published weights the paper starts from can be downloaded (bof never downloads them)."""

DARKNET53_CONV74_URL = "https://pjreddie.com/media/files/darknet53.conv.74"
DARKNET53_CONV74_BYTES = 162_482_580
