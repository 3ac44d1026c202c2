#!/usr/bin/env bash
# Fetch the official SadTalker and GFPGAN/facexlib weights (needs internet). Files already present are kept, so
# it is safe to run again. Targets: SADTALKER_CHECKPOINTS (default checkpoints/) and SADTALKER_GFPGAN_WEIGHTS
# (default gfpgan/weights/). A mirror of the release files can be used through SADTALKER_WEIGHTS_MIRROR
# (a URL prefix under which every file is looked up by its name alone).
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt_dir=${SADTALKER_CHECKPOINTS:-checkpoints}
gfpgan_dir=${SADTALKER_GFPGAN_WEIGHTS:-gfpgan/weights}
sadtalker_release=https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc
facexlib_release=https://github.com/xinntao/facexlib/releases/download
gfpgan_release=https://github.com/TencentARC/GFPGAN/releases/download

fetch() {  # fetch URL DEST_DIR
  local url=$1 dir=$2 name
  name=$(basename "$url")
  [ -n "${SADTALKER_WEIGHTS_MIRROR:-}" ] && url="${SADTALKER_WEIGHTS_MIRROR%/}/$name"
  mkdir -p "$dir"
  if [ -s "$dir/$name" ]; then
    echo "have $dir/$name"
    return
  fi
  echo "fetching $name -> $dir/"
  curl --fail --location --retry 3 --silent --show-error -o "$dir/$name.part" "$url"
  mv "$dir/$name.part" "$dir/$name"
}

for name in SadTalker_V0.0.2_256.safetensors SadTalker_V0.0.2_512.safetensors \
            mapping_00229-model.pth.tar mapping_00109-model.pth.tar; do
  fetch "$sadtalker_release/$name" "$ckpt_dir"
done
fetch "$facexlib_release/v0.1.0/alignment_WFLW_4HG.pth" "$gfpgan_dir"
fetch "$facexlib_release/v0.1.0/detection_Resnet50_Final.pth" "$gfpgan_dir"
fetch "$gfpgan_release/v1.3.0/GFPGANv1.4.pth" "$gfpgan_dir"
fetch "$facexlib_release/v0.2.2/parsing_parsenet.pth" "$gfpgan_dir"
echo "weights in $ckpt_dir and $gfpgan_dir"
