#!/usr/bin/env bash
# The air-gap round trip on a tiny but real PaddleNLP CodeGen model, end to end.
# Run through `make demo`, which sets up .venv first and puts it on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=demo-work
rm -rf "$WORK"
mkdir -p "$WORK/stick"
ONLINE="$PWD/$WORK/online-home"
OFFLINE="$PWD/$WORK/offline-home"
MODEL=Salesforce/codegen-350M-mono
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# No network on the offline side: a fresh network namespace has none at all.
if unshare -n true 2>/dev/null; then
    OFFLINE_RUN=(unshare -n --)
    offline_note="inside 'unshare -n' (no network interface at all)"
else
    OFFLINE_RUN=()
    offline_note="WITHOUT network isolation (unshare -n is not permitted here)"
fi

say "online machine: PaddleNLP fills its cache (a tiny real CodeGen stands in for $MODEL)"
PPNLP_HOME="$ONLINE" python tools/tiny_models.py codegen "$ONLINE/models/$MODEL" >/dev/null
ls -l "$ONLINE/models/$MODEL"

say "online machine: pack it into one checksummed bundle"
paddle-bundle pack "$MODEL" -o "$WORK/stick/bundle.tar.zst" --home "$ONLINE"
cat "$WORK/stick/bundle.tar.zst.sha256"

say "the stick: check the copy with nothing but coreutils, then with paddle-bundle"
(cd "$WORK/stick" && sha256sum -c bundle.tar.zst.sha256)
paddle-bundle verify "$WORK/stick/bundle.tar.zst"
paddle-bundle inspect "$WORK/stick/bundle.tar.zst"

say "offline machine: install, $offline_note"
"${OFFLINE_RUN[@]}" paddle-bundle install "$WORK/stick/bundle.tar.zst" --home "$OFFLINE"
paddle-bundle list --home "$OFFLINE"
paddle-bundle check --home "$OFFLINE"

say "offline machine: load by full path and generate, $offline_note"
"${OFFLINE_RUN[@]}" env PPNLP_HOME="$OFFLINE" MODEL_DIR="$OFFLINE/models/$MODEL" python - <<'PY' 2>&1 | grep -v -i warn
import os
from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer
path = os.environ["MODEL_DIR"]
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
model.eval()
inputs = tokenizer("def hello():", return_tensors="pd")
ids, _ = model.generate(**inputs, max_new_tokens=8, decode_strategy="greedy_search")
print("generated token ids:", ids.numpy().tolist()[0])
print("as text:", repr(tokenizer.decode(ids.numpy().tolist()[0])))
PY
say "done: the model went from the online cache to the offline cache and ran there"
