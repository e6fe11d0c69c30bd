# init-image/image.mk: the boot image, included by the top Makefile (`include init-image/image.mk`).
# Outputs under build/: image/vmlinuz, image/initramfs.cpio.gz, image/runtime.img (the agent's read-only
# disk), image/busybox.tar and image/busybox.img (test root filesystem), test/runtime-fake.img.

IMAGE_DIR := build/image
IMAGE_SCRIPTS := init-image/lib.sh
# The agent that goes onto the runtime disk as /tether. Until the single-executable build exists this is the
# static stand-in; set IMAGE_AGENT (before the include, or on the make command line) to the real binary.
IMAGE_AGENT ?= build/test/fake-agent
# Measured under TCG (docs/decisions/rootfs-images.md): gzip boots as fast as zstd or no compression here.
INITRAMFS_COMPRESSION ?= gzip

.PHONY: image
image: $(IMAGE_DIR)/vmlinuz $(IMAGE_DIR)/initramfs.cpio.gz $(IMAGE_DIR)/runtime.img $(IMAGE_DIR)/busybox.img $(IMAGE_DIR)/busybox-image.tar ## boot image: kernel, initramfs, runtime disk, busybox test disk
	@printf '%-34s %12s bytes\n' vmlinuz $$(stat -c %s $(IMAGE_DIR)/vmlinuz) \
		initramfs.cpio.gz $$(stat -c %s $(IMAGE_DIR)/initramfs.cpio.gz) \
		"agent ($(IMAGE_AGENT))" $$(stat -c %s $(IMAGE_AGENT)) \
		"runtime.img (allocated)" $$(( $$(du -sk $(IMAGE_DIR)/runtime.img | cut -f1) * 1024 )) \
		busybox.tar $$(stat -c %s $(IMAGE_DIR)/busybox.tar)

.PHONY: image-smoke
image-smoke: $(IMAGE_DIR)/vmlinuz $(IMAGE_DIR)/initramfs.cpio.gz build/test/runtime-fake.img $(IMAGE_DIR)/busybox.img ## boot the image with a fake agent under QEMU (pc and microvm)
	init-image/test/boot-smoke.sh -n 1 pc microvm

# vmlinuz is written last by fetch-kernel.sh, so it stands for the unpacked tree (build/kernel/root) too.
$(IMAGE_DIR)/vmlinuz: init-image/fetch-kernel.sh init-image/kernel.env $(IMAGE_SCRIPTS)
	init-image/fetch-kernel.sh build

$(IMAGE_DIR)/stage0: init-image/stage0/stage0.c
	@mkdir -p $(@D)
	gcc -static -Os -Wall -Wextra -Werror -o $@ $< && strip $@

$(IMAGE_DIR)/initramfs.cpio.gz: $(IMAGE_DIR)/stage0 $(IMAGE_DIR)/vmlinuz init-image/make-initramfs.sh $(IMAGE_SCRIPTS)
	init-image/make-initramfs.sh build/kernel/root $(IMAGE_DIR)/stage0 $@ $(INITRAMFS_COMPRESSION)

$(IMAGE_DIR)/runtime.img: $(IMAGE_AGENT) bin/tether-exec $(IMAGE_DIR)/vmlinuz init-image/build-runtime.sh $(IMAGE_SCRIPTS)
	TETHER_KERNEL_ROOT=build/kernel/root init-image/build-runtime.sh $(IMAGE_AGENT) bin/tether-exec $@

$(IMAGE_DIR)/busybox.tar: init-image/make-busybox-tar.sh $(IMAGE_SCRIPTS)
	init-image/make-busybox-tar.sh build/cache $@

$(IMAGE_DIR)/busybox.img: $(IMAGE_DIR)/busybox.tar init-image/tar-to-ext4.sh $(IMAGE_SCRIPTS)
	init-image/tar-to-ext4.sh $< $@

build/test/fake-agent: init-image/test/fake-agent.c
	@mkdir -p $(@D)
	gcc -static -Os -Wall -Wextra -Werror -o $@ $< && strip $@

build/test/runtime-fake.img: build/test/fake-agent bin/tether-exec $(IMAGE_DIR)/vmlinuz init-image/build-runtime.sh $(IMAGE_SCRIPTS)
	TETHER_KERNEL_ROOT=build/kernel/root init-image/build-runtime.sh build/test/fake-agent bin/tether-exec $@

# The busybox root filesystem as a one-layer image in `docker save` form (tether/busybox:latest), for `docker load`.
$(IMAGE_DIR)/busybox-image.tar: $(IMAGE_DIR)/busybox.tar init-image/make-docker-image.mjs
	node init-image/make-docker-image.mjs $< $@
