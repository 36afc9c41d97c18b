# hasup in a container, for managing a Docker container beside it (docs/deploy-docker.md).
#
# Build with scripts/build-image.sh: no image registry is needed. The base image
# (hasup-base:local, Debian 12 with python3 and python3-venv) is made from Debian
# packages with mmdebstrap and `docker import`; the build context is staged by the
# script and holds only this file's inputs: wheels/ (hasup[docker] and its
# dependencies, from `pip wheel`), so the RUN step needs no network.
#
# Run (see examples/neuronex-docker/):
#   docker run -d --name hasup --restart always --network host \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /etc/hasup:/etc/hasup:ro -v /var/lib/hasup:/var/lib/hasup hasup:local
ARG BASE=hasup-base:local
FROM ${BASE}

COPY wheels /tmp/wheels
RUN python3 -m venv /opt/hasup \
 && /opt/hasup/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels --disable-pip-version-check \
        'hasup[docker]' \
 && rm -rf /tmp/wheels \
 && /opt/hasup/bin/hasup --version

ENV PATH=/opt/hasup/bin:$PATH \
    PYTHONUNBUFFERED=1
# state.json (boot epoch, term, fault back-off) must survive container re-creation.
VOLUME ["/var/lib/hasup"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["hasup"]
CMD ["run", "-c", "/etc/hasup/hasup.toml"]
