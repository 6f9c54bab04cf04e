# syntax=docker/dockerfile:1
# Build: docker build -t onnx-serve .    Run: docker run -p 8000:8000 onnx-serve
# Node 24 (LTS): Node 20 is past its end of life; the server itself runs on Node 20 through 24.

# The full image builds: it has python3, make and g++ for the one native addon compiled from source.
FROM node:24-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# No install scripts (onnxruntime-node ships its CPU binaries in the package, its CUDA download is skipped,
# and `prepare` would build before the sources are here) but better-sqlite3's, the embedded audit store:
# it fetches a prebuilt binary for this Node, or compiles one.
RUN npm ci --ignore-scripts --no-audit --no-fund && npm rebuild better-sqlite3
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY workers ./workers
RUN npm run build && npm prune --omit=dev --ignore-scripts
# onnxruntime-node ships every platform's binaries (288 MB of the 357 MB pruned node_modules): keep only
# linux on this stage's architecture (the image's: x64 or arm64). Source maps are never read at run time.
RUN arch="$(node -p process.arch)" && \
    for d in node_modules/onnxruntime-node/bin/napi-v*/*/*; do \
      case "$d" in */linux/"$arch") ;; *) rm -rf "$d" ;; esac; \
    done && \
    find node_modules/onnxruntime-node/bin -type d -empty -delete && \
    ls node_modules/onnxruntime-node/bin/napi-v*/linux/"$arch"/onnxruntime_binding.node && \
    find node_modules -name '*.map' -type f -delete && \
    cd node_modules/better-sqlite3 && rm -rf deps src build/deps build/Release/obj build/Release/obj.target \
      build/Release/.deps build/Release/test_extension.node && ls build/Release/better_sqlite3.node

FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY models ./models
COPY vendor ./vendor
# The audit log's segments and, without DATABASE_URL, the embedded SQLite store live here.
RUN mkdir -p /data && chown node:node /data
ENV AUDIT_DIR=/data
VOLUME /data
USER node
EXPOSE 8000
# Ready only once every model is loaded and warmed in every worker.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/health/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node runs as PID 1 and handles SIGTERM itself: it drains in-flight requests, then exits 0.
STOPSIGNAL SIGTERM
CMD ["node", "dist/src/node/main.js"]
