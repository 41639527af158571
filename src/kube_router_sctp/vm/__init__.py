"""Guests on a real kernel under QEMU, for the smoke stage and the tests.

- ``qemu``: the one place that talks to QEMU (command line, process, serial ports).
- ``kernel``: a vmlinuz + modules directory, from paths or a kernel ``.deb`` (cached).
- ``modules``: which kernel modules a guest loads, in which order, decompressed.
- ``cpio``: the initramfs writer.
- ``kernelsmoke``: boot a kernel with an image's root file system; the smoke check's
  exit status comes back on a serial port.
- ``dockerhost``: a cached Debian disk with Docker, booted fresh as a Docker host.
"""
