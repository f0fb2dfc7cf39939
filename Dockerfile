# syntax=docker/dockerfile:1
#
# avatar-gateway container image.
#
#   docker build -t avatar-gateway .                        # the runtime image
#   docker build --target check -t avatar-gateway:check .   # also type-checks the tree
#
# The gateway is compiled (`npm run build`, tsc) to dist/ in a build stage; the runtime image holds the
# production node_modules and dist/, and runs `node --single-threaded-gc dist/main.js`: no TypeScript tooling
# in production.
# Node 24, an LTS line, pinned to a release so that a rebuild gets the same runtime.

FROM node:24.11.1-bookworm-slim AS base
WORKDIR /app
ENV NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false

# Every dependency, dev ones included: what the build and the check target need.
FROM base AS deps
COPY package.json package-lock.json ./
RUN npm ci

FROM deps AS build
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Optional target (`--target check`); BuildKit skips it when building the runtime image.
FROM deps AS check
COPY . .
RUN npm run typecheck

# Production dependencies only, installed on their own so the runtime image carries no dev tooling.
FROM base AS prod-deps
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force

FROM base AS runtime
ENV NODE_ENV=production PORT=4000 HOST=0.0.0.0 DATA_DIR=/data
COPY --from=prod-deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY --from=build /app/dist ./dist
COPY drizzle ./drizzle
COPY assets ./assets
COPY public ./public
COPY schema ./schema
# The code stays root-owned and read-only to the process; only DATA_DIR is writable. A named volume mounted on
# /data for the first time copies this ownership, so the node user can write there.
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 4000) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node itself is PID 1 (not npm, which would not pass SIGTERM on), so SIGTERM reaches main.ts's handler.
# An instance is one event loop, so it is meant to run on one core (scale out with more instances, not more
# cores per container). There V8's garbage collector is best on the event loop's own thread
# (--single-threaded-gc): its concurrent markers and parallel scavengers would take turns with the event loop on
# that core, or spend the container's CPU quota, and stall requests while they mark (bench/README.md).
CMD ["node", "--single-threaded-gc", "dist/main.js"]
