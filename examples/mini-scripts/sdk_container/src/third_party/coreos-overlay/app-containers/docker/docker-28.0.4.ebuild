# Copyright (c) 2026 The Flatcar Maintainers (mini-scripts stand-in)
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DESCRIPTION="Docker engine (docker-flatcar sysext) (mini-scripts stand-in: building it writes a tiny binary package)"
HOMEPAGE="https://www.flatcar.org/"
LICENSE="Apache-2.0"
SLOT="0"
KEYWORDS="amd64 arm64"
