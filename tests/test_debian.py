"""Parts of debian-packages: resolution over small indexes, the ld.so.cache read back by
the host's real ldconfig, the InRelease signature against a real file of the archive, and
the checks of a base's /etc/os-release."""

from __future__ import annotations

import subprocess

import pysequoia
import pytest

from buildpacks.debian import suite_of
from buildpacks.debian.archive import (
    Archive,
    Deb,
    Fetcher,
    index_digests,
    parse_packages,
    verify_in_release,
)
from buildpacks.debian.assemble import installed_packages, suite_of_os_release
from buildpacks.debian.ldcache import ld_so_cache
from buildpacks.debian.resolve import Universe, resolve
from buildpacks.debian.unpack import merged
from buildpacks.errors import BuildError
from tests import testbed

MIRROR = "http://mirror.invalid/debian"


def deb(name: str, version: str = "1.0", **fields: str) -> Deb:
    entry = {"Package": name, "Version": version, "Architecture": "amd64", "SHA256": "0" * 64}
    entry["Filename"] = f"pool/{name}.deb"
    (parsed,) = parse_packages(
        "".join(f"{k}: {v}\n" for k, v in {**entry, **fields}.items()), MIRROR
    )
    return parsed


def universe(*debs: Deb) -> Universe:
    return Universe.of(debs)


def test_resolution_follows_depends_alternatives_and_provides():
    u = universe(
        deb("app", Depends="libfoo (>= 2), missing-alt | libbar, virt", **{"Pre-Depends": "libc6"}),
        deb("libfoo", "1.0"),
        deb("libfoo", "2.5"),  # the higher version is the candidate
        deb("libbar"),
        deb("libc6"),
        deb("provider", Provides="virt (= 1)"),
        deb("unrelated"),
    )
    chosen = {d.name: d.version for d in resolve(u, ["app"])}
    assert chosen == {
        "app": "1.0",
        "libfoo": "2.5",
        "libbar": "1.0",
        "libc6": "1.0",
        "provider": "1.0",
    }


def test_resolution_skips_what_is_installed_and_script_only_packages():
    u = universe(deb("app", Depends="libc6 (>= 2.30), debconf | debconf-2.0"), deb("libc6", "2.36"))
    assert [d.name for d in resolve(u, ["app"], {"libc6": "2.36-9"})] == ["app"]
    # An installed version too old is replaced by the suite's.
    assert [d.name for d in resolve(u, ["app"], {"libc6": "2.28"})] == ["app", "libc6"]


def test_unsatisfiable_dependency_names_the_chain():
    u = universe(deb("app", Depends="mid"), deb("mid", Depends="libz (>= 9)"), deb("libz", "1.2"))
    with pytest.raises(BuildError) as e:
        resolve(u, ["app"])
    assert "app → mid → libz (>= 9)" in str(e.value)
    assert "the suite has libz 1.2" in str(e.value)


def test_unknown_package_suggests_near_names():
    u = universe(deb("libpq5"), deb("libpq-dev"))
    with pytest.raises(BuildError, match=r"no package 'libpq'; did you mean libpq5"):
        resolve(u, ["libpq"])


def test_unknown_suite_is_refused():
    with pytest.raises(BuildError, match=r"unknown Debian suite 'sid'.*debian-packages:bookworm"):
        suite_of("debian-packages:sid")


def test_paths_are_written_merged_usr():
    assert merged("lib/x86_64-linux-gnu/libc.so.6") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert merged("bin") == "usr/bin"
    assert merged("usr/bin/python3.11") == "usr/bin/python3.11"
    assert merged("etc/ssl") == "etc/ssl"


def test_ld_so_cache_is_read_by_glibc_ldconfig(tmp_path):
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(
        ld_so_cache(
            [
                "usr/lib/x86_64-linux-gnu/libpq.so.5",
                "usr/lib/x86_64-linux-gnu/libpq.so.5.15",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
                "usr/local/lib/libpython3.11.so.1.0",
                "usr/lib/x86_64-linux-gnu/libpq.so",  # a -dev link: not listed
                "usr/share/doc/libfoo.so.1",  # not a library directory
            ],
            "amd64",
        )
    )
    out = subprocess.run(
        ["ldconfig", "-p", "-C", str(cache)], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("4 libs found in cache")
    assert "\tlibpq.so.5 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libpq.so.5\n" in out
    assert "libpython3.11.so.1.0 (libc6,x86-64) => /usr/local/lib/libpython3.11.so.1.0" in out
    assert "libfoo" not in out


@pytest.fixture(scope="module")
def in_release() -> bytes:
    """The bookworm InRelease file, as Debian's archive serves it now."""
    fetcher = Fetcher("http://deb.debian.org/debian", print)
    try:
        return fetcher.get(Archive("http://deb.debian.org/debian", "bookworm").in_release)
    finally:
        fetcher.close()


def test_in_release_verifies_against_the_shipped_keys(in_release):
    signed = verify_in_release(in_release, "InRelease")
    digests = index_digests(signed, "bookworm", "InRelease")
    sha256, size = digests["main/binary-arm64/Packages.xz"]
    assert len(sha256) == 64 and size > 1_000_000


def test_tampered_in_release_is_refused(in_release):
    tampered = in_release.replace(b"Codename: bookworm", b"Codename: bookwors", 1)
    assert tampered != in_release
    with pytest.raises(BuildError, match=r"^InRelease: OpenPGP signature does not verify"):
        verify_in_release(tampered, "InRelease")


def test_a_private_keyring_verifies_its_own_mirror_only(in_release, tmp_path):
    """debian-keyring: a mirror signing with its own key verifies with that keyring, in
    binary or armored form, and nothing else does: the Debian keys refuse it, the keyring
    refuses Debian's own signature, another key's and an unsigned file."""
    signed = verify_in_release(in_release, "InRelease")
    key = testbed.SigningKey(tmp_path)
    resigned = key.clearsign(signed)
    assert verify_in_release(resigned, "InRelease", key.keyring) == signed
    armored = tmp_path / "mirror.asc"
    armored.write_text(str(pysequoia.Cert.from_file(str(key.keyring))))
    assert armored.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert verify_in_release(resigned, "InRelease", armored) == signed
    with pytest.raises(BuildError, match=r"does not verify with the Debian archive keys"):
        verify_in_release(resigned, "InRelease")
    named = rf"^InRelease: OpenPGP signature does not verify with debian-keyring {key.keyring}"
    with pytest.raises(BuildError, match=named):
        verify_in_release(in_release, "InRelease", key.keyring)
    other = testbed.SigningKey(tmp_path / "other")
    with pytest.raises(BuildError, match=named):
        verify_in_release(other.clearsign(signed), "InRelease", key.keyring)
    with pytest.raises(BuildError, match=named):
        verify_in_release(signed, "InRelease", key.keyring)  # no signature at all


def test_a_keyring_that_is_not_one_is_named(tmp_path):
    text = tmp_path / "keys.txt"
    text.write_text("not a key\n")
    with pytest.raises(BuildError, match=rf"^debian-keyring {text}: not an OpenPGP keyring"):
        verify_in_release(b"", "InRelease", text)
    missing = tmp_path / "missing.gpg"
    with pytest.raises(BuildError, match=rf"^debian-keyring {missing}: cannot be read"):
        verify_in_release(b"", "InRelease", missing)


def test_in_release_of_another_suite_is_refused(in_release):
    signed = verify_in_release(in_release, "InRelease")
    with pytest.raises(BuildError, match=r"describes 'bookworm', not 'trixie'"):
        index_digests(signed, "trixie", "InRelease")


def test_os_release_decides_the_suite_or_refuses():
    debian = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
    assert suite_of_os_release(debian, "base").python == "3.11"
    ubuntu = b"ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n"
    with pytest.raises(BuildError, match=r"is Debian noble; supported: bookworm, trixie"):
        suite_of_os_release(ubuntu, "base")
    alpine = b"ID=alpine\nVERSION_ID=3.20.0\n"
    with pytest.raises(BuildError, match=r"base image base is not Debian-based .*ID='alpine'"):
        suite_of_os_release(alpine, "base")


def test_installed_packages_read_dpkg_status_and_status_d():
    status = (
        b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\n"
        b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"
    )
    record = b"Package: libpq5\nStatus: install ok installed\nVersion: 15.20-0+deb12u1\n"
    assert installed_packages(
        {"var/lib/dpkg/status": status, "var/lib/dpkg/status.d/libpq5": record}
    ) == {"libc6": "2.36-9", "libpq5": "15.20-0+deb12u1"}


def test_update_alternatives_are_done_declaratively_or_refused():
    from buildpacks.debian.unpack import Unpacked, handle_scripts

    unpacked = Unpacked()
    script = (
        "#!/bin/sh\nset -e\n"
        "update-alternatives --install /usr/lib/x86_64-linux-gnu/libblas.so.3 \\\n"
        "    libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 10\n"
    )
    handle_scripts(deb("libblas3"), script, unpacked)
    handle_scripts(
        deb("libopenblas0"),
        script.replace("/blas/", "/openblas/").replace(" 10\n", " 100\n"),
        unpacked,
    )
    assert unpacked.alternatives == {
        "libblas.so.3-x86_64-linux-gnu": (
            100,
            "/usr/lib/x86_64-linux-gnu/libblas.so.3",
            "/usr/lib/x86_64-linux-gnu/openblas/libblas.so.3",
        )
    }
    computed = "update-alternatives --install /usr/bin/x x $TARGET 5\n"
    with pytest.raises(BuildError, match=r"Debian package tool: .*computed arguments"):
        handle_scripts(deb("tool"), computed, Unpacked())
    with pytest.raises(BuildError, match=r"Debian package daemon: .*creates system users"):
        handle_scripts(deb("daemon"), "adduser --system daemon\n", Unpacked())


def test_script_only_packages_are_installed_when_asked_for_by_name():
    u = universe(deb("debconf"), deb("app", Depends="debconf"))
    assert [d.name for d in resolve(u, ["app"])] == ["app"]
    assert [d.name for d in resolve(u, ["app", "debconf"])] == ["app", "debconf"]


INDEX = f"""Package: foo
Version: 1:2.0-1
Architecture: amd64
Provides: libfoo-dev (= 2.0),
 foo-virtual
Depends: libc6 (>= 2.36)
Description: the foo tool
 Longer text that an image record leaves out.
 .
 More of it.
Filename: pool/main/f/foo/foo_2.0-1_amd64.deb
Size: 1234
SHA256: {"a" * 64}
Tag: role::program


Package: source-only
Version: 1.0
Description: no Filename nor SHA256: nothing to download

Package: bar
Source: bar-src (1.1)
Version: 1.1
Architecture: all
Filename: pool/main/b/bar/bar_1.1_all.deb
SHA256: {"b" * 64}
"""


def test_index_entries_read_lazily_match_deb822():
    from debian.deb822 import Packages

    foo, bar = parse_packages(INDEX, MIRROR)
    full = Packages(INDEX.split("\n\n\n")[0])
    assert (foo.name, foo.version, foo.provides) == (
        "foo",
        "1:2.0-1",
        full["Provides"],
    )
    assert (bar.name, bar.version, bar.provides) == ("bar", "1.1", "")
    # The fields parsed on use are deb822's, in entry order, Description cut to its summary.
    assert list(foo.fields) == [k for k in full if k != "Tag"]
    assert foo.fields["Provides"] == full["Provides"]
    assert foo.fields["Description"] == "the foo tool"
    assert foo.url == f"{MIRROR}/pool/main/f/foo/foo_2.0-1_amd64.deb"
    assert bar.fields["Source"] == "bar-src (1.1)" and bar.sha256 == "b" * 64
    # A folded Provides is seen by the resolver like any other.
    libc6 = deb("libc6", "2.36-9")
    assert [d.name for d in resolve(universe(foo, bar, libc6), ["foo-virtual"])] == ["foo", "libc6"]


def test_inspect_of_an_assembled_base_is_one_clear_error(tmp_path):
    env = testbed.clean_env(BP_CACHE_DIR=str(tmp_path / "cache"))
    for command in ("inspect", "sbom"):
        result = testbed.cli(command, "debian-packages:bookworm", env=env)
        assert result.returncode == 1
        assert result.stderr.startswith("error: debian-packages:bookworm: debian-packages: ")
        assert (
            len(result.stderr.splitlines()) == 1
            and "inspect the image built on it" in result.stderr
        )
