#!/bin/sh
# Regenerates every fixture of this directory with real tools (QEMU,
# SeaBIOS, swtpm, tpm2-tools). The quotes replay the SeaBIOS log, so the
# log comes first. See the two scripts for what each file is.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
"$here/regenerate-seabios-log.sh"
"$here/regenerate-quotes.sh"
