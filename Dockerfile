# picoclaw:latest: the all-in-one executable (bun run build -> dist/picoclaw, every role and command)
# on nothing but the glibc it links against. `npm run image` (scripts/image.sh) builds dist/, the local
# base image and this, with no registry. With a registry you can skip the local base image:
#   docker build --build-arg BASE=debian:bookworm-slim -t picoclaw:latest .
# (Dockerfile.multistage also compiles inside Docker.)
#
# Two stages: the first, on a Debian base (picoclaw-base:bookworm from debootstrap, scripts/base-image.sh),
# collects the shared libraries the executable and the Temporal SDK's native library link (glibc's
# loader, libc, libm, libpthread, libdl, librt, and libgcc_s), and writes passwd/group/nsswitch.conf and the user's home.
# The image is that on scratch: no shell, no package manager, nothing else to patch (see README).
#
# The image sets no swarm config: compose.yaml / `docker run -e` give PICOCLAW_SWARM_ENABLED, _ROLE,
# _NATS_URLS, ... as in the guide, and the guide's defaults apply otherwise. (An ENV here would outrank
# the config file and stop a --swarm.role flag from implying swarm mode.) Only the HTTP endpoint is
# set, so the HEALTHCHECK and probes have /healthz to ask.
ARG BASE=picoclaw-base:bookworm

FROM ${BASE} AS runtime
# What `ldd dist/picoclaw` lists (glibc's loader, libc, libm, libpthread, libdl), and what the Temporal
# SDK's native library (unpacked to /tmp and loaded when a coordinator uses Temporal) adds: librt and
# libgcc_s (which glibc also loads to unwind threads). Listed rather than read from the executable, so this stage does not
# change with every build and stays cached. The container test runs the image: a missing one fails it.
RUN set -eu; \
    mkdir -p /out/etc /out/tmp /out/home/picoclaw/.picoclaw; \
    for lib in /lib*/ld-linux*.so.[0-9] /lib/*-linux-gnu/libc.so.6 /lib/*-linux-gnu/libm.so.6 \
               /lib/*-linux-gnu/libpthread.so.0 /lib/*-linux-gnu/libdl.so.2 /lib/*-linux-gnu/librt.so.1 \
               /lib/*-linux-gnu/libgcc_s.so.1; do \
      cp --parents -L "$lib" /out; \
    done; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\npicoclaw:x:10001:10001:picoclaw:/home/picoclaw:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >/out/etc/passwd; \
    printf 'root:x:0:\npicoclaw:x:10001:\nnogroup:x:65534:\n' >/out/etc/group; \
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >/out/etc/nsswitch.conf; \
    chmod 1777 /out/tmp; \
    chown -R 10001:10001 /out/home/picoclaw; \
    chmod 700 /out/home/picoclaw/.picoclaw

FROM scratch
COPY --from=runtime /out /
COPY dist/picoclaw /usr/local/bin/picoclaw
USER 10001:10001
WORKDIR /home/picoclaw
# ~/.picoclaw (config.yaml, keys) is writable; mount a volume there to keep it.
ENV PATH=/usr/local/bin \
    HOME=/home/picoclaw \
    PICOCLAW_SWARM_HTTP_LISTEN=0.0.0.0:8080
# /healthz, /readyz, /metrics (swarm.http.listen)
EXPOSE 8080
# `picoclaw health` asks /healthz on swarm.http.listen: the process answers and its NATS link is up.
# The start period covers a node waiting for NATS (swarm.nats.connect_timeout).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["picoclaw", "health"]
ENTRYPOINT ["picoclaw"]
