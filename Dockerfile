# syntax=docker/dockerfile:1
# kubegate: one self-contained binary (`bun build --compile`) on a minimal base.
#   docker build -t kubegate:0.1.0 .
#   docker run --rm kubegate:0.1.0 --help

# Build with the Bun that package.json pins (devDependency bun ^1.4.5), so the runtime compiled into the binary
# is the one the tests ran on.
FROM oven/bun:1.4.5 AS build
WORKDIR /src
# Dependencies first, so that a source change keeps this layer cached. Bun reads package-lock.json (npm's)
# and installs exactly its versions. Production only: the image's bun compiles; the dev tools (bun and deno
# from npm, typescript, playwright) are not needed, and --ignore-scripts skips their downloads.
COPY package.json package-lock.json ./
RUN bun install --frozen-lockfile --production --ignore-scripts
COPY tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
# `npm run build` (= bun build --compile) writes dist/kubegate; smoke-test it here, where there is a shell.
RUN bun run build && ./dist/kubegate --version

# A Bun-compiled binary is dynamically linked against glibc only (libc, libm, libpthread, libdl and the
# loader; no libstdc++), so distroless "base" (glibc, CA certificates, tzdata, no shell) is enough; "static"
# has no glibc and would not run it.
FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /src/dist/kubegate /usr/local/bin/kubegate
# nonroot (65532) by default: enough for `--manifests` and ports >= 1024. The DaemonSet runs it as uid 0 with
# only NET_BIND_SERVICE, to bind ports below 1024 (see deploy/base/daemonset.yaml).
USER 65532:65532
EXPOSE 10356 10349
ENTRYPOINT ["/usr/local/bin/kubegate"]
