# The maas service image: one image, every process (`maas api`, `maas processor`, ...).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Only what the package needs: tests, the venv and local data stay out of the image.
COPY pyproject.toml constraints.txt ./
COPY core ./core
COPY maas ./maas
COPY ledger ./ledger
COPY memes ./memes
COPY api ./api
COPY processors ./processors
COPY schemas ./schemas
RUN pip install -c constraints.txt . && useradd --create-home maas && mkdir -p /data/blobs && chown -R maas /data

# Local state (e.g. the ledger processor's RocksDB) goes here, writable by the app user.
ENV MAAS_DATA_DIR=/data
USER maas
# The content policy's numbers, cached in the home directory: a process starts without
# importing scikit-learn (docs/content-policy.md).
RUN python -c "from memes import policy; policy.warm_up()"
ENTRYPOINT ["maas"]
