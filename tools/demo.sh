#!/usr/bin/env bash
# The whole air-gap story on a tiny but real PaddleNLP CodeGen model, end to end:
# a local stand-in for PaddleNLP's download server -> fetch -- python app.py (the user's own
# program, recorded, then proven offline) -> the stick -> install with no network -> the same
# program by name (offline mode, Taskflow included) -> the same bundle published on an nginx
# mirror, and a client with an empty cache running the program from it.
# Run through `make demo`, which sets up .venv first and puts it on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$PWD/demo-work"
rm -rf "$WORK"
mkdir -p "$WORK/stick"
ONLINE="$WORK/online-home"
OFFLINE="$WORK/offline-home"
MODEL=Salesforce/codegen-350M-mono
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
quiet_paddle() { grep -v -i -E 'warn|^\s*$|ccache|distutils|\[ *(INFO|ERROR|DEBUG)' || true; }

# No network on the offline side: a fresh network namespace has no interface at all.
if unshare -n true 2>/dev/null; then
    OFFLINE_RUN=(unshare -n --)
    offline_note="inside 'unshare -n' (no network interface at all)"
else
    OFFLINE_RUN=()
    offline_note="WITHOUT network isolation (unshare -n is not permitted here)"
fi

say "a stand-in for PaddleNLP's model server on 127.0.0.1, serving a tiny real $MODEL"
PPNLP_HOME="$WORK/build-home" python tools/tiny_models.py mirror-tree "$WORK/mirror" >/dev/null
python tools/mirror.py start "$WORK/mirror" --state "$WORK/mirror.json" > "$WORK/mirror.env"
trap 'python tools/mirror.py stop --state "$WORK/mirror.json" >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$WORK/mirror.env"
echo "PPNLP_ENDPOINT=$PPNLP_ENDPOINT"

# The user's program, unchanged: it loads models by name, as programs do.
cat > "$WORK/app.py" <<'PY'
from paddlenlp import Taskflow
from paddlenlp.transformers import AutoModelForCausalLM, AutoTokenizer
name = "Salesforce/codegen-350M-mono"
tokenizer = AutoTokenizer.from_pretrained(name)
model = AutoModelForCausalLM.from_pretrained(name)
print("by name: loaded", type(model).__name__)
codegen = Taskflow("code_generation", model=name, max_length=8)
print("Taskflow code_generation:", codegen(["def hello():"]))
PY

say "online machine: fetch -- python app.py records what PaddleNLP obtains, proves it offline"
paddle-bundle fetch -o "$WORK/stick/bundle.tar.zst" --home "$ONLINE" -- python "$WORK/app.py" \
    2>&1 | quiet_paddle
cat "$WORK/stick/bundle.tar.zst.sha256"

say "the stick: check the copy with nothing but coreutils, then with paddle-bundle"
(cd "$WORK/stick" && sha256sum -c bundle.tar.zst.sha256)
paddle-bundle verify "$WORK/stick/bundle.tar.zst"
paddle-bundle inspect "$WORK/stick/bundle.tar.zst"

say "offline machine: install, $offline_note"
"${OFFLINE_RUN[@]}" paddle-bundle install "$WORK/stick/bundle.tar.zst" --home "$OFFLINE"
paddle-bundle list --home "$OFFLINE"
paddle-bundle check --home "$OFFLINE"

say "offline machine: the same app.py, loading by NAME, with offline mode, $offline_note"
"${OFFLINE_RUN[@]}" paddle-bundle run --home "$OFFLINE" -- python "$WORK/app.py" 2>&1 | quiet_paddle

say "many offline machines: publish once on an nginx mirror; a client with an empty cache runs app.py from it, $offline_note"
NGINX=$(command -v nginx || { test -x /usr/sbin/nginx && echo /usr/sbin/nginx; } || true)
if [ -n "$NGINX" ]; then
    paddle-bundle mirror publish "$WORK/stick/bundle.tar.zst" --root "$WORK/fleet"
    paddle-bundle mirror list --root "$WORK/fleet"
    PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$WORK/nginx"
    paddle-bundle mirror nginx-config --root "$WORK/fleet" --listen "127.0.0.1:$PORT" \
        > "$WORK/nginx/server.conf"
    cat > "$WORK/nginx/nginx.conf" <<CONF
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 256; }
http {
  access_log $WORK/nginx/access.log;
  client_body_temp_path $WORK/nginx/body;
  include $WORK/nginx/server.conf;
}
CONF
    # the client: offline mode with the mirror set, nothing of the model in its cache
    "${OFFLINE_RUN[@]}" bash -c "
        ip link set lo up 2>/dev/null || true
        '$NGINX' -p '$WORK/nginx' -c '$WORK/nginx/nginx.conf' 2>/dev/null &
        trap 'kill \$!' EXIT
        for _ in \$(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
        PADDLE_BUNDLE_OFFLINE=1 PADDLE_BUNDLE_MIRROR=http://127.0.0.1:$PORT/paddlenlp \
            PPNLP_HOME='$WORK/client-home' python '$WORK/app.py'" 2>&1 | quiet_paddle
    # (the readiness probe above sends nothing: nginx logs it as "" 400)
    echo "nginx: $(grep -c '"GET \|"HEAD ' "$WORK/nginx/access.log") GET/HEAD requests," \
        "$(grep -vc '"GET \|"HEAD \|"" 400' "$WORK/nginx/access.log") others"
    grep -o '"GET [^ ]*' "$WORK/nginx/access.log" | sed 's/^"/  /'
else
    echo "skipped: nginx is not installed ('make setup-nginx' installs Debian's nginx-light)"
fi

say "done: fetched online, carried on the stick, installed and run with no network, then served to a fleet"
