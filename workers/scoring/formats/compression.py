"""Every compression an input file may come in, decompressed as a bounded stream.

The format is decided by the file's first bytes, never by its name or its
``Content-Encoding`` (an object can be stored with ``Content-Encoding: gzip`` and
a plain body, or gzip-compressed without saying so):

* gzip, bzip2 and xz (standard library), zstd (``compression.zstd`` from Python
  3.14, else the ``backports.zstd`` package when installed). Each may hold several
  members (``cat a.gz b.gz``, ``gzip >> f.gz``, bgzip and its empty EOF member,
  ``pigz -i``, ``pbzip2``, ``xz`` multi-stream): all of them are data. Null bytes
  between or after members (tape padding, xz stream padding) are skipped.
* Anything else that announces itself as compressed or archived (zip, 7z, rar,
  lz4, Unix compress, lzip, zstd without a decoder) is refused with a ``BadInput``
  saying what to do, as are a truncated or corrupt member, bytes after the end of
  the compressed data, and a file compressed twice. A file that ends inside a
  member (its data or its header) raises :class:`Truncated`, a ``BadInput`` of its
  own: the launch preflight, which reads only the first bytes, tells that end from
  corrupt data by the type.

Bounded: input is fed to the decoder in slices of :data:`SLICE` bytes and every
piece yielded is at most :attr:`Limits.piece` bytes, whatever the input (a
decompression bomb never becomes one huge buffer). :class:`Limits` caps the
expanded size and the expansion ratio; crossing either is a ``BadInput`` naming
the variable that sets it.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from scorefleet.errors import BadInput
from workers.scoring.formats import magic
from workers.scoring.formats.magic import COMPRESSIONS_READ, SNIFF, Compression, Role

#: Compressed bytes handed to the decoder at a time (so the ratio is measured on
#: what was really consumed, give or take one slice).
SLICE = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps on what a compressed input may expand to."""

    #: at most this many bytes after decompression (SCOREFLEET_MAX_EXPANDED_GB)
    max_expanded: int
    #: expanded bytes per compressed byte read so far (SCOREFLEET_MAX_EXPANSION_RATIO)
    max_ratio: float
    #: the ratio is checked once this much has been expanded (small files may be silly)
    ratio_after: int = 16 * 1024 * 1024
    #: largest piece yielded
    piece: int = 1024 * 1024


class Truncated(BadInput):
    """The compressed data ends inside a member (its data, or its header): a file
    cut short, or, for the launch preflight (workers.scoring.formats.preflight), the end of the
    first bytes it read. Any other ``BadInput`` of this module is about bytes that
    were there."""


def _zstd_module() -> Any | None:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def sniff(head: bytes) -> Compression:
    """The format of a file starting with ``head``; ``BadInput`` for a compression
    or archive that is recognised but not read."""
    sig = magic.identify(head, Role.COMPRESSED, Role.REFUSED)
    if sig is None:
        return Compression.PLAIN
    if sig.compression is None:
        raise BadInput(f"the file is {sig.what}, which scorefleet does not read: {sig.advice}")
    if sig.compression is Compression.ZSTD and _zstd_module() is None:
        raise BadInput(
            "the file is zstd-compressed, which this worker cannot read (it needs "
            "Python 3.14 or the backports.zstd package); recompress it with gzip"
        )
    return sig.compression


class _Decoder(Protocol):
    """The interface bz2, lzma and zstd decompressors share (zlib is adapted)."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _Gzip:
    """zlib's decompressobj behind the bz2/lzma interface (one gzip member)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._more = False  # output may be pending inside zlib

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not (self._d.unconsumed_tail or self._more)

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self._d.decompress(self._d.unconsumed_tail + data, max(0, max_length))
        self._more = max_length > 0 and len(out) == max_length and not self._d.eof
        return out


def _new_decoder(fmt: Compression) -> _Decoder:
    if fmt is Compression.GZIP:
        return _Gzip()
    if fmt is Compression.BZIP2:
        return bz2.BZ2Decompressor()
    if fmt is Compression.XZ:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    zstd = _zstd_module()
    if zstd is None:  # sniff() refused it already
        raise BadInput("zstd input cannot be read here")
    decoder: _Decoder = zstd.ZstdDecompressor()
    return decoder


_CORRUPT: tuple[type[BaseException], ...] = (zlib.error, lzma.LZMAError, OSError, EOFError)


def _zstd_error() -> tuple[type[BaseException], ...]:
    zstd = _zstd_module()
    err = getattr(zstd, "ZstdError", None) if zstd else None
    return (err,) if isinstance(err, type) and issubclass(err, BaseException) else ()


def _head(it: Iterator[bytes]) -> bytes:
    """At least :data:`SNIFF` bytes from the start (fewer only if the file is shorter)."""
    head = b""
    for chunk in it:
        head += chunk
        if len(head) >= SNIFF:
            break
    return head


def decompress(chunks: Iterable[bytes], limits: Limits) -> Iterator[bytes]:
    """The file's bytes, decompressed if its first bytes say it is compressed."""
    it = iter(chunks)
    head = _head(it)
    fmt = sniff(head)
    if fmt is Compression.PLAIN:
        if head:
            yield head
        yield from it
        return
    yield from _Stream(fmt, limits).run(head, it)


class _Stream:
    def __init__(self, fmt: Compression, limits: Limits) -> None:
        self.fmt = fmt
        self.limits = limits
        self.consumed = 0  # compressed bytes fed to decoders
        self.expanded = 0
        self.members = 0

    def run(self, head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
        errors = _CORRUPT + _zstd_error()
        decoder: _Decoder | None = None
        pending = head
        checked_inner = False
        while True:
            if not pending:
                nxt = next(rest, None)
                if nxt is None:
                    break
                pending = nxt
            if decoder is None:
                pending = pending.lstrip(b"\0")  # padding between or after members
                if not pending:
                    continue
                pending = self._start_member(pending, rest)
                decoder = _new_decoder(self.fmt)
            data, pending = pending[:SLICE], pending[SLICE:]
            self.consumed += len(data)
            try:
                for piece in self._drain(decoder, data):
                    if not checked_inner:
                        checked_inner = True
                        self._refuse_nested(piece)
                    yield piece
            except errors as exc:
                raise BadInput(
                    f"the file looks {self.fmt.value}-compressed but member {self.members} "
                    f"cannot be decompressed: {exc}"
                ) from exc
            if decoder.eof:
                pending = decoder.unused_data + pending
                self.consumed -= len(decoder.unused_data)
                decoder = None
        if decoder is not None:
            raise Truncated(
                f"the {self.fmt.value}-compressed file is truncated: it ends inside member "
                f"{self.members} (was the upload cut short?)"
            )

    def _start_member(self, pending: bytes, rest: Iterator[bytes]) -> bytes:
        if len(pending) < SNIFF:
            pending += _head(rest)
        self.members += 1
        if self.members > 1 and not magic.signature_of(self.fmt).matches(pending):
            if len(pending) < SNIFF and magic.could_start(self.fmt, pending):  # the end
                raise Truncated(
                    f"the {self.fmt.value}-compressed file is truncated: it ends inside the "
                    f"header of member {self.members} (was the upload cut short?)"
                )
            raise BadInput(
                f"the {self.fmt.value}-compressed file has bytes after the end of its "
                f"compressed data (after member {self.members - 1}, "
                f"{self.consumed:,d} bytes in) that are not {self.fmt.value}; "
                "it may be corrupt or two files stuck together"
            )
        return pending

    def _drain(self, decoder: _Decoder, data: bytes) -> Iterator[bytes]:
        out = decoder.decompress(data, self.limits.piece)
        while True:
            if out:
                self.expanded += len(out)
                self._check_limits()
                yield out
            if decoder.eof or decoder.needs_input:
                return
            out = decoder.decompress(b"", self.limits.piece)

    def _check_limits(self) -> None:
        lim = self.limits
        if self.expanded > lim.max_expanded:
            raise BadInput(
                f"the {self.fmt.value}-compressed file expands to more than "
                f"{lim.max_expanded / 1e9:g} GB (SCOREFLEET_MAX_EXPANDED_GB); split it, "
                "or ask the operators to raise that limit"
            )
        if self.expanded > lim.ratio_after and self.expanded > lim.max_ratio * self.consumed:
            raise BadInput(
                f"the {self.fmt.value}-compressed file expands more than {lim.max_ratio:g} "
                f"times ({self.expanded:,d} bytes from the first {self.consumed:,d}; "
                "SCOREFLEET_MAX_EXPANSION_RATIO): real CSV compresses far less, so this "
                "looks like a decompression bomb; if it is real data, ask the operators "
                "to raise that limit"
            )

    def _refuse_nested(self, piece: bytes) -> None:
        inner = piece[:SNIFF]
        if magic.identify(inner, Role.COMPRESSED, Role.REFUSED) is not None:
            raise BadInput(
                f"the file is {self.fmt.value}-compressed and what it holds is compressed "
                "or archived again; decompress it once and upload that, or compress the "
                f"CSV itself ({COMPRESSIONS_READ})"
            )
