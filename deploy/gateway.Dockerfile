# The llmprod gateway (`llmprod serve --upstream`) as `llmprod deploy` runs it: a slim Python base, llmprod[serve]
# from the wheel built in this checkout, a non-root user (uid 10001, as the manifests' securityContext says).
#
#   python -m pip wheel --no-deps -w dist .
#   docker build -f deploy/gateway.Dockerfile -t REGISTRY/llmprod-gateway:TAG .
#   docker push REGISTRY/llmprod-gateway:TAG        # then: llmprod deploy ... --image-gateway REGISTRY/llmprod-gateway:TAG
#
# torch comes from PyTorch's CPU index: the gateway needs it only for guard models it runs in-process (Prompt Guard),
# and the CUDA build would add gigabytes to an image that never sees a GPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HOME=/tmp HF_HOME=/tmp/hf

COPY dist/ /tmp/dist/
COPY constraints.txt /tmp/dist/constraints.txt
RUN set -eux; \
    wheel="$(ls /tmp/dist/llmprod-*.whl)"; \
    grep -v '^torch==' /tmp/dist/constraints.txt > /tmp/dist/c.txt; \
    pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0; \
    pip install -c /tmp/dist/c.txt "${wheel}[serve]"; \
    rm -rf /tmp/dist; \
    useradd --uid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin llmprod

USER 10001
EXPOSE 8080
ENTRYPOINT ["llmprod", "serve"]
CMD ["--help"]
