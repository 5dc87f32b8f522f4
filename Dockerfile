# projection-runner image: multi-stage (build with dev dependencies, run with production dependencies only).
#
# Build arguments:
#   NODE_IMAGE  the Node.js base image of both stages (default node:20-bookworm-slim)
#
# Run:  docker run -e DATABASE_URL=postgres://… -p 9464:9464 -v "$PWD/my-projections:/app/projections:ro" projection-runner
# User projections: compiled .js/.mjs modules mounted at /app/projections (the bundled examples are there by default).
ARG NODE_IMAGE=docker.io/library/node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /build
COPY package.json package-lock.json tsconfig.json ./
# --ignore-scripts: the build needs no install script (embedded PostgreSQL is for development only).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src ./src
COPY projections ./projections
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    PROJECTION_RUNNER_PROJECTIONS=/app/projections \
    PROJECTION_RUNNER_METRICS_PORT=9464
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; optional ones (the embedded PostgreSQL binaries) are left out: the image always
# talks to a real database through DATABASE_URL.
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force \
 && groupadd --system --gid 10001 runner && useradd --system --uid 10001 --gid runner --no-create-home runner
COPY --from=build /build/dist/src ./dist/src
COPY --from=build /build/dist/projections ./projections
USER runner
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PROJECTION_RUNNER_METRICS_PORT||9464)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# A batch's events live for one transaction: with V8's default young generation large batches get promoted and the
# old generation grows with the length of a replay; 16 MB semi-spaces let them die young (flat memory, faster replays;
# see docs/performance.md).
ENTRYPOINT ["node", "--max-semi-space-size=16", "/app/dist/src/cli/main.js"]
CMD ["run"]
