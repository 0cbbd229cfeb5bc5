# Shared by prepare_voc.sh and prepare_coco.sh (sourced, not run): download, verify, unpack, idempotently.
# Each archive: downloaded into $DATA/downloads unless a file with the right MD5 is already there,
# verified, then unpacked into $DATA once (a marker file records it). DRY_RUN=1 only prints the steps.

run() {  # run a command, or print it under --dry-run
  if [[ "${DRY_RUN:-0}" == 1 ]]; then echo "would run: $*"; else "$@"; fi
}

fetch_verify_unpack() {  # url md5 destination
  local url="$1" md5="$2" dest="$3"
  local name; name="$(basename "$url")"
  local archive="$DATA/downloads/$name" marker="$dest/.${name}.unpacked"
  if [[ -f "$marker" ]]; then
    echo "ok: $name already unpacked into $dest"
    return
  fi
  run mkdir -p "$DATA/downloads" "$dest"
  if [[ -f "$archive" ]] && [[ "$(md5sum "$archive" | cut -d' ' -f1)" == "$md5" ]]; then
    echo "ok: $archive already downloaded and verified"
  else
    echo "download: $url -> $archive"
    run curl -fL --retry 5 --retry-delay 10 -C - -o "$archive" "$url"
    if [[ "${DRY_RUN:-0}" != 1 ]]; then
      local got; got="$(md5sum "$archive" | cut -d' ' -f1)"
      if [[ "$got" != "$md5" ]]; then
        echo "error: $archive has MD5 $got, expected $md5 (delete it and run again)" >&2
        exit 1
      fi
    fi
    [[ "${DRY_RUN:-0}" == 1 ]] && echo "would verify: $name md5 $md5" || echo "verified: $name md5 $md5"
  fi
  case "$name" in
    *.tar) run tar -xf "$archive" -C "$dest" ;;
    *.zip) run unzip -q -o "$archive" -d "$dest" ;;
  esac
  run touch "$marker"
}

parse_args() {  # --dry-run, --data DIR
  DRY_RUN=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --data) DATA="$2"; shift ;;
      -h|--help) sed -n "2,7p" "$0"; exit 0 ;;
      *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
  done
}
