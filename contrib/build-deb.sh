#!/usr/bin/env bash
# Build the Debian package of bpc-ovz: target/debian/bpc-ovz_<version>-1_<arch>.deb
#
#   contrib/build-deb.sh                    release build, then the package (for BackupPC servers)
#   contrib/build-deb.sh --binary FILE --fast -o DIR
#                                           package an already built bpc-ovz (the package test
#                                           passes the binary `cargo test` built: no second build)
#
# Steps: install cargo-deb if it is missing (from crates.io), build bpc-ovz, generate the man pages
# and shell completions from the binary's own command line definition into target/assets/, then
# `cargo deb --no-build` (metadata: [package.metadata.deb] in Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

binary='' deb_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) binary=$2; shift 2 ;;
	--fast) deb_args+=(--fast); shift ;;
	-o|--output) deb_args+=(-o "$2"); shift 2 ;;
	-h|--help) sed -n '2,12p' "$0"; exit 0 ;;
	*) echo "build-deb: unknown argument $1 (see --help)" >&2; exit 1 ;;
	esac
done

if ! cargo deb --version >/dev/null 2>&1; then
	echo "build-deb: installing cargo-deb from crates.io (once; takes a few minutes)" >&2
	cargo install cargo-deb --version '^3.8' --locked --quiet
fi
tmp=''
trap '[ -n "$tmp" ] && rm -rf "$tmp"' EXIT
if [ -z "$binary" ]; then
	cargo build --release --locked
	bin=target/release/bpc-ovz
else
	[ -x "$binary" ] || { echo "build-deb: $binary is not an executable" >&2; exit 1; }
	# cargo-deb takes the binary from <target dir>/release/: give it a private one.
	tmp=$(mktemp -d)
	mkdir -p "$tmp/release"
	cp "$binary" "$tmp/release/bpc-ovz"
	export CARGO_TARGET_DIR=$tmp
	bin=$tmp/release/bpc-ovz
fi

rm -rf target/assets
"$bin" generate man --dir target/assets/man
for sh in bash zsh fish; do
	"$bin" generate completions "$sh" --dir target/assets/completions
done
cargo deb --no-build --strip "${deb_args[@]}"
