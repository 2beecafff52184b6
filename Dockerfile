# stunedge container image: build with the Rust toolchain, run from a small base.
#   docker build -t stunedge .
#   docker run --rm --network host stunedge                    # mmsg backend (see below)
#   docker run --rm --network host --security-opt seccomp=io_uring.json stunedge
#
# Docker's default seccomp profile blocks io_uring_setup / io_uring_enter / io_uring_register:
# stunedge logs "io_uring unavailable (… EPERM …); using the mmsg backend" and runs recvmmsg/
# sendmmsg, which needs nothing special. To run the io_uring backend, start from Docker's
# default profile (https://github.com/moby/moby/blob/master/profiles/seccomp/default.json), add
# the three io_uring syscalls to the allowed list, and pass it with --security-opt seccomp=FILE.
# Use --network host: clients must see the node's address, not a NATed one.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stunedge

FROM debian:bookworm-slim
COPY --from=build /src/target/release/stunedge /usr/local/bin/stunedge
COPY configs/stunedge.toml /etc/stunedge/stunedge.toml
USER 65534:65534
EXPOSE 3478/udp 9478/tcp
ENTRYPOINT ["/usr/local/bin/stunedge"]
CMD ["serve", "-c", "/etc/stunedge/stunedge.toml"]
