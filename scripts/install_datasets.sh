#!/bin/sh
# Installs the Debian Fashion-MNIST package when we can (root + apt); otherwise says how.
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian package dataset-fashion-mnist ..."
    apt-get install -y -q --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1 || \
        { apt-get update -q >/dev/null 2>&1 && \
          apt-get install -y -q --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1; } || \
        echo "note: could not install dataset-fashion-mnist; the digits demo does not need it"
else
    echo "note: skipping dataset-fashion-mnist (needs root + apt: sudo apt-get install dataset-fashion-mnist," \
         "or pass --data-dir with the IDX files); the digits demo does not need it"
fi
exit 0
