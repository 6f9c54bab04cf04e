# syntax=docker/dockerfile:1
# Build: docker build -t onnx-serve .    Run: docker run -p 8000:8000 onnx-serve

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY workers ./workers
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY models ./models
# The audit spool and, without DATABASE_URL, the embedded PGlite store live here.
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
