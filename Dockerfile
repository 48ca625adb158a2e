# The runtime-only inference server: edgert's wheel with the [serve] extra, no TensorFlow (linux/amd64, linux/arm64).
#
#   python3 -m pip wheel --no-deps -w dist .
#   docker buildx build --platform linux/amd64,linux/arm64 -t edgert-serve .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$HOME/edgert:/models:ro" edgert-serve
#
# /models is a repository as `edgert deploy` fills it (or a folder of .tflite files); new versions are picked up
# while serving. An Edge TPU needs the device passed in (--device /dev/bus/usb or /dev/apex_0) and libedgetpu in
# the image; the GPU delegate needs the host's Vulkan driver.
FROM python:3.11-slim-bookworm

RUN useradd --system --create-home --uid 10001 edgert
COPY dist/edgert-*-py3-none-any.whl /tmp/wheels/
RUN pip install --no-cache-dir --disable-pip-version-check "$(ls /tmp/wheels/edgert-*.whl)[serve]" \
    && rm -rf /tmp/wheels
USER edgert
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=2)"
# Inside a container the server must listen beyond loopback; publish the port on 127.0.0.1 (above) unless the
# network is trusted, and add --token-file and --tls-cert/--tls-key otherwise.
ENTRYPOINT ["edgert", "serve", "--host", "0.0.0.0", "--repository", "/models"]
