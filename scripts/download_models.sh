#!/usr/bin/env bash
# Download the official SadTalker and GFPGAN/facexlib weights into checkpoints/ and gfpgan/weights/, or with
# --ditto the Ditto release (ditto_pytorch/, ditto_cfg/ of digital-avatar/ditto-talkinghead) into checkpoints/ditto/.
#
# Resumes partial downloads (<name>.part), skips files already present and valid, verifies the size and sha256
# recorded below, and falls back to a Hugging Face mirror when the release URL fails or gives a wrong file.
#
# Usage: bash scripts/download_models.sh [--list] [--ditto] [NAME ...]
#   no NAME: every SadTalker and GFPGAN file; --ditto: every Ditto file instead (InsightFace's detector and the
#   203-point landmark model are not fetched: their licence is non-commercial; we use our own face mesh)
# Environment:
#   SADTALKER_CHECKPOINTS     destination of SadTalker files      (default: <repo>/checkpoints)
#   SADTALKER_GFPGAN_WEIGHTS  destination of GFPGAN/facexlib files (default: <repo>/gfpgan/weights)
#   SADTALKER_DITTO_CHECKPOINTS  destination of the Ditto files   (default: <repo>/checkpoints/ditto)
#   SADTALKER_DOWNLOAD_BASE   if set, every file is fetched from $SADTALKER_DOWNLOAD_BASE/<name> first
#   SADTALKER_MIRROR_BASE     fallback base URL, file fetched from <base>/<name>
#                             (default: https://huggingface.co/vinthony/SadTalker-V002rc/resolve/main; not for
#                             Ditto files, which have one source)
#   SADTALKER_MANIFEST        a manifest file to use instead of the one recorded below (same line format)
#   SADTALKER_CURL_OPTS       extra curl options (e.g. "--retry 5")
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CKPT_DIR="${SADTALKER_CHECKPOINTS:-$ROOT/checkpoints}"
GFPGAN_DIR="${SADTALKER_GFPGAN_WEIGHTS:-$ROOT/gfpgan/weights}"
DITTO_DIR="${SADTALKER_DITTO_CHECKPOINTS:-$ROOT/checkpoints/ditto}"
MIRROR_BASE="${SADTALKER_MIRROR_BASE:-https://huggingface.co/vinthony/SadTalker-V002rc/resolve/main}"

SADTALKER_RELEASE=https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc
FACEXLIB_010=https://github.com/xinntao/facexlib/releases/download/v0.1.0
FACEXLIB_022=https://github.com/xinntao/facexlib/releases/download/v0.2.2
GFPGAN_130=https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0
DITTO_HF=https://huggingface.co/digital-avatar/ditto-talkinghead/resolve/main

# Manifest: <destination: checkpoints|gfpgan|ditto> <file name> <release URL> <size in bytes> <sha256>
# (a Ditto file's name is its path in the release, kept under the destination folder)
# A '-' size or sha256 means "not recorded": the file is accepted when non-empty and its measured size and
# sha256 are printed so they can be recorded here. The official values could not be measured where this
# script was written (no access to the release hosts); record them on first download.
read -r -d '' RECORDED_MANIFEST <<EOF || true
checkpoints mapping_00109-model.pth.tar       $SADTALKER_RELEASE/mapping_00109-model.pth.tar       - -
checkpoints mapping_00229-model.pth.tar       $SADTALKER_RELEASE/mapping_00229-model.pth.tar       - -
checkpoints SadTalker_V0.0.2_256.safetensors  $SADTALKER_RELEASE/SadTalker_V0.0.2_256.safetensors  - -
checkpoints SadTalker_V0.0.2_512.safetensors  $SADTALKER_RELEASE/SadTalker_V0.0.2_512.safetensors  - -
gfpgan      alignment_WFLW_4HG.pth            $FACEXLIB_010/alignment_WFLW_4HG.pth                 - -
gfpgan      detection_Resnet50_Final.pth      $FACEXLIB_010/detection_Resnet50_Final.pth           - -
gfpgan      GFPGANv1.4.pth                    $GFPGAN_130/GFPGANv1.4.pth                           - -
gfpgan      parsing_parsenet.pth              $FACEXLIB_022/parsing_parsenet.pth                   - -
ditto       ditto_pytorch/models/appearance_extractor.pth  $DITTO_HF/ditto_pytorch/models/appearance_extractor.pth  - -
ditto       ditto_pytorch/models/motion_extractor.pth      $DITTO_HF/ditto_pytorch/models/motion_extractor.pth      - -
ditto       ditto_pytorch/models/warp_network.pth          $DITTO_HF/ditto_pytorch/models/warp_network.pth          - -
ditto       ditto_pytorch/models/decoder.pth               $DITTO_HF/ditto_pytorch/models/decoder.pth               - -
ditto       ditto_pytorch/models/stitch_network.pth        $DITTO_HF/ditto_pytorch/models/stitch_network.pth        - -
ditto       ditto_pytorch/models/lmdm_v0.4_hubert.pth      $DITTO_HF/ditto_pytorch/models/lmdm_v0.4_hubert.pth      - -
ditto       ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx  $DITTO_HF/ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx  - -
ditto       ditto_cfg/v0.4_hubert_cfg_pytorch.pkl          $DITTO_HF/ditto_cfg/v0.4_hubert_cfg_pytorch.pkl          - -
EOF

log() { printf '%s\n' "$*" >&2; }

manifest() {
  if [ -n "${SADTALKER_MANIFEST:-}" ]; then
    [ -f "$SADTALKER_MANIFEST" ] || { log "error: SADTALKER_MANIFEST=$SADTALKER_MANIFEST does not exist"; exit 2; }
    grep -v '^[[:space:]]*\(#\|$\)' "$SADTALKER_MANIFEST"
  else
    printf '%s\n' "$RECORDED_MANIFEST"
  fi
}

file_size() { stat -c %s "$1"; }
file_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# verify FILE SIZE SHA256 -> 0 when the file matches what is recorded ('-' = not recorded)
verify() {
  local path=$1 size=$2 sha=$3
  [ -s "$path" ] || return 1
  if [ "$size" != "-" ] && [ "$(file_size "$path")" != "$size" ]; then
    log "  size mismatch: $(basename "$path") is $(file_size "$path") bytes, expected $size"
    return 1
  fi
  if [ "$sha" != "-" ] && [ "$(file_sha256 "$path")" != "$sha" ]; then
    log "  sha256 mismatch: $(basename "$path")"
    return 1
  fi
  return 0
}

# fetch URL PART SIZE -> resumes PART; 0 on a complete transfer
fetch() {
  local url=$1 part=$2 size=$3
  if [ "$size" != "-" ] && [ -f "$part" ] && [ "$(file_size "$part")" -gt "$size" ]; then
    rm -f "$part"   # longer than the recorded size: not a prefix of the right file
  fi
  if [ "$size" != "-" ] && [ -f "$part" ] && [ "$(file_size "$part")" = "$size" ]; then
    return 0        # already complete, only the final rename was missing
  fi
  log "  fetching $url"
  # shellcheck disable=SC2086
  curl --fail --location --silent --show-error --retry 3 --continue-at - ${SADTALKER_CURL_OPTS:-} \
    --output "$part" "$url"
}

# download DIR NAME URL SIZE SHA256 MIRROR ('' MIRROR: no fallback)
download() {
  local dir=$1 name=$2 url=$3 size=$4 sha=$5 mirror=$6
  local dest="$dir/$name" part="$dir/$name.part" source
  mkdir -p "$(dirname "$dest")"
  if [ -f "$dest" ]; then
    if verify "$dest" "$size" "$sha"; then
      log "present: $dest"
      return 0
    fi
    log "  $dest does not match the recorded size/sha256; downloading it again"
    rm -f "$dest"
  fi
  local sources=()
  if [ -n "${SADTALKER_DOWNLOAD_BASE:-}" ]; then sources+=("${SADTALKER_DOWNLOAD_BASE%/}/$name"); else sources+=("$url"); fi
  if [ -n "$mirror" ]; then sources+=("${mirror%/}/$name"); fi
  for source in "${sources[@]}"; do
    if fetch "$source" "$part" "$size"; then
      if verify "$part" "$size" "$sha"; then
        mv -f "$part" "$dest"
        if [ "$size" = "-" ] || [ "$sha" = "-" ]; then
          log "  not recorded in the manifest; measured: $name $(file_size "$dest") $(file_sha256 "$dest")"
        fi
        log "downloaded: $dest"
        return 0
      fi
      rm -f "$part"   # a complete transfer of the wrong file: never resume from it
    fi                # an interrupted transfer keeps its .part: the next source (or run) resumes it
    log "  failed from $source"
  done
  log "error: could not download $name (tried: ${sources[*]})"
  return 1
}

main() {
  local list=0 ditto=0 wanted=() failed=0
  for arg in "$@"; do
    case $arg in
      --list) list=1 ;;
      --ditto) ditto=1 ;;
      -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
      -*) log "unknown option $arg"; exit 2 ;;
      *) wanted+=("$arg") ;;
    esac
  done
  command -v curl >/dev/null || { log "error: curl is needed"; exit 2; }
  local seen=()
  while read -r where name url size sha; do
    [ -n "$name" ] || continue
    if [ ${#wanted[@]} -gt 0 ]; then
      [[ " ${wanted[*]} " == *" $name "* ]] || continue
    elif [ $ditto = 1 ] && [ "$where" != ditto ]; then continue
    elif [ $ditto = 0 ] && [ "$where" = ditto ]; then continue
    fi
    seen+=("$name")
    mirror=$MIRROR_BASE
    case $where in
      checkpoints) dir=$CKPT_DIR ;;
      gfpgan) dir=$GFPGAN_DIR ;;
      ditto) dir=$DITTO_DIR; mirror= ;;
      *) log "error: bad manifest destination '$where' for $name"; exit 2 ;;
    esac
    if [ $list = 1 ]; then printf '%s %s %s %s\n' "$dir/$name" "$url" "$size" "$sha"; continue; fi
    download "$dir" "$name" "$url" "$size" "$sha" "$mirror" || failed=1
  done < <(manifest)
  for name in "${wanted[@]}"; do
    [[ " ${seen[*]} " == *" $name "* ]] || { log "error: $name is not in the manifest"; failed=1; }
  done
  return $failed
}

main "$@"
