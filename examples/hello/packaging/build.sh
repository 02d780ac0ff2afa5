#!/bin/sh
# Build one package: build.sh deb|rpm amd64|arm64
# or the static binary packaging/Dockerfile copies: build.sh image amd64|arm64 (into build/image/)
# Reads DROPSHIP_VERSION (set by dropship's build flow); writes into out/.
set -eu
format=$1
arch=$2
version=${DROPSHIP_VERSION:?DROPSHIP_VERSION is not set}
case "$arch" in
  amd64) cc=${CC_AMD64:-x86_64-linux-gnu-gcc}; rpmarch=x86_64 ;;
  arm64) cc=${CC_ARM64:-aarch64-linux-gnu-gcc}; rpmarch=aarch64 ;;
  *) echo "unknown arch $arch" >&2; exit 2 ;;
esac
command -v "$cc" >/dev/null || { echo "compiler $cc not found (Debian: gcc-aarch64-linux-gnu for arm64)" >&2; exit 2; }
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
rm -rf build out
mkdir -p build/bin out
if [ "$format" = image ]; then  # static: the image is FROM scratch, with no libc to link against
  mkdir -p build/image
  "$cc" -O2 -Wall -static -DHELLO_VERSION="\"$version\"" -o build/image/hello src/hello.c
  ls build/image
  exit 0
fi
"$cc" -O2 -Wall -DHELLO_VERSION="\"$version\"" -o build/bin/hello src/hello.c

case "$format" in
deb)
  root=build/deb
  mkdir -p "$root/DEBIAN" "$root/usr/bin"
  install -m 0755 build/bin/hello "$root/usr/bin/hello"
  cat > "$root/DEBIAN/control" <<CONTROL
Package: hello
Version: $version
Architecture: $arch
Maintainer: dropship example <hello@example.org>
Section: utils
Priority: optional
Homepage: https://example.org/hello
Description: greets the world from a dropship release
 The example project that dropship builds, signs and publishes.
CONTROL
  dpkg-deb --root-owner-group -Zxz --build "$root" "out/hello_${version}_${arch}.deb" >/dev/null
  ;;
rpm)
  top=$(pwd)/build/rpm
  mkdir -p "$top/SPECS" "$top/SOURCES"
  cp build/bin/hello "$top/SOURCES/hello"
  cat > "$top/SPECS/hello.spec" <<SPEC
Name: hello
Version: $version
Release: 1
Summary: greets the world from a dropship release
License: Apache-2.0
URL: https://example.org/hello
%global debug_package %{nil}
%global __os_install_post %{nil}
%global _build_id_links none

%description
The example project that dropship builds, signs and publishes.

%install
install -D -m 0755 %{_sourcedir}/hello %{buildroot}/usr/bin/hello

%files
/usr/bin/hello
SPEC
  rpmbuild --quiet --define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1" \
    --define "_buildhost reproducible" --define "_topdir $top" --define "_rpmdir $(pwd)/out" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --target "$rpmarch-linux" -bb "$top/SPECS/hello.spec"
  ;;
*) echo "unknown format $format" >&2; exit 2 ;;
esac
ls out
