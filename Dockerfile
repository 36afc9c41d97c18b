# The hasup container image: hasup in a virtual environment, `hasup` as entry point.
#
# From a clone of the repository (needs a registry for the base image and PyPI):
#   docker build -t hasup .
# Offline (CI, air-gapped edge boxes): scripts/build-image.sh builds the same file on a
# Debian 12 base made with mmdebstrap (BASE=hasup-base:local) from a staged context of
# wheels (SPEC=hasup[docker], PIP_ARGS="--no-index --find-links /tmp/src/wheels").
#
# Run (see examples/neuronex-docker/; restart policy for hasup itself, never for the
# service it manages):
#   docker run -d --name hasup --restart always --network host --init \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /etc/hasup:/etc/hasup:ro -v /var/lib/hasup:/var/lib/hasup hasup
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG SPEC=/tmp/src[docker]
ARG PIP_ARGS=

COPY . /tmp/src
RUN python3 -m venv /opt/hasup \
 && /opt/hasup/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_ARGS} "${SPEC}" \
 && rm -rf /tmp/src \
 && /opt/hasup/bin/hasup --version

ENV PATH=/opt/hasup/bin:$PATH \
    PYTHONUNBUFFERED=1
# state.json (boot epoch, term, fault back-off) must survive container re-creation.
VOLUME ["/var/lib/hasup"]
STOPSIGNAL SIGTERM
# healthy: running, not FAULT (exit 0, or 4 = an alarm such as a peer down); see docs/cli.md
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD hasup status -c /etc/hasup/hasup.toml >/dev/null; c=$?; [ "$c" = 0 ] || [ "$c" = 4 ]
ENTRYPOINT ["hasup"]
CMD ["run", "-c", "/etc/hasup/hasup.toml"]
