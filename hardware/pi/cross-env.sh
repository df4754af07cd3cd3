# Sourced by the aarch64 scripts: the cross toolchain (Debian's rustc-web 1.96 with its arm64 std,
# gcc-aarch64-linux-gnu as linker and C compiler). rustup's toolchain has no aarch64 target here,
# so its cargo/rustc are bypassed explicitly: /usr/bin/cargo and /usr/bin/rustc are rustc-web's.
# Install with hardware/pi/install-deps.
A64_TRIPLE=aarch64-unknown-linux-gnu
A64_CARGO=/usr/bin/cargo
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# With --target, RUSTFLAGS reaches the target crates only (not build scripts or proc macros).
export RUSTFLAGS="-C target-feature=+crt-static"
# Its own target dir: the stable toolchain's artifacts and these never invalidate each other.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_AARCH64:-$ROOT/target/aarch64}

a64_check_toolchain() { # fails with the install hint when a piece is missing
  local missing=""
  [ -x "$A64_CARGO" ] && "$RUSTC" --version 2>/dev/null | grep -q . || missing="$missing rustc-web cargo-web"
  [ -d /usr/lib/rustlib/$A64_TRIPLE/lib ] || missing="$missing libstd-rust-web-dev:arm64"
  command -v aarch64-linux-gnu-gcc >/dev/null || missing="$missing gcc-aarch64-linux-gnu"
  if [ -n "$missing" ]; then
    echo "aarch64 toolchain incomplete, missing:$missing (run hardware/pi/install-deps)" >&2
    return 1
  fi
}
