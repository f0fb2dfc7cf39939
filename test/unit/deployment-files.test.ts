import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { configVariables, envExample, withReadmeTable } from '../../src/config-docs.js';

// The deployment files are checked by reading them: no Docker engine is needed.

const repoRoot = new URL('../../', import.meta.url);
const read = (relativePath: string): string => readFileSync(new URL(relativePath, repoRoot), 'utf8');

/** Every variable the gateway reads: the config schema's, never a list kept by hand. */
const SCHEMA_VARIABLES = configVariables();
const VARIABLE_NAMES = SCHEMA_VARIABLES.map((variable) => variable.name);

/**
 * The variables named in the first column of API.md's Configuration table, or null when the contract is not
 * beside the repository (a fresh clone has no ../shared).
 */
function variablesFromContract(): string[] | null {
  const apiMdPath = fileURLToPath(new URL('../shared/API.md', repoRoot));
  if (!existsSync(apiMdPath)) return null;
  const sections = readFileSync(apiMdPath, 'utf8').split(/^## /m);
  const section = sections.find((candidate) => candidate.startsWith('Configuration')) ?? '';
  const names = new Set<string>();
  for (const line of section.split('\n')) {
    if (!line.startsWith('|')) continue;
    const firstCell = line.split('|')[1] ?? '';
    for (const match of firstCell.matchAll(/`([A-Z][A-Z0-9_]*)`/g)) names.add(match[1]!);
  }
  return [...names];
}

const contractVariables = variablesFromContract();

type Mapping = Record<string, unknown>;

const isMapping = (value: unknown): value is Mapping =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function mappingAt(parent: unknown, key: string): Mapping {
  const value = isMapping(parent) ? parent[key] : undefined;
  if (!isMapping(value)) throw new Error(`expected a mapping at "${key}"`);
  return value;
}

/** Replaces `${VAR:-default}` / `${VAR-default}` with the default and `${VAR}` with '' (compose unset). */
const withDefaults = (value: string): string =>
  value.replace(/\$\{[A-Z0-9_]+(?::?-([^}]*))?\}/g, (_whole, fallback: string | undefined) => fallback ?? '');

/** The service's environment as a name -> value map, whichever of compose's two syntaxes it uses. */
function environmentOf(service: Mapping): Map<string, string | null> {
  const environment = service.environment;
  const entries = new Map<string, string | null>();
  if (Array.isArray(environment)) {
    for (const item of environment) {
      const [name, ...rest] = String(item).split('=');
      entries.set(name!, rest.length > 0 ? rest.join('=') : null);
    }
  } else if (isMapping(environment)) {
    for (const [name, value] of Object.entries(environment)) {
      entries.set(name, value === null || value === undefined ? null : String(value));
    }
  }
  return entries;
}

/** The service's volume mounts, whichever of compose's two syntaxes it uses. */
function volumeMounts(service: Mapping): Array<{ source: string; target: string }> {
  const volumes = Array.isArray(service.volumes) ? service.volumes : [];
  return volumes.map((volume: unknown) => {
    if (isMapping(volume)) return { source: String(volume.source ?? ''), target: String(volume.target) };
    const [first = '', second] = String(volume).split(':');
    return second === undefined ? { source: '', target: first } : { source: first, target: second };
  });
}

const isNamedVolume = (source: string): boolean => /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(source);

/** Container ports the service publishes, with compose defaults applied. */
function publishedContainerPorts(service: Mapping): number[] {
  const ports = Array.isArray(service.ports) ? service.ports : [];
  return ports.map((port: unknown) => {
    if (isMapping(port)) return Number(withDefaults(String(port.target)));
    const spec = withDefaults(String(port)).replace(/\/(tcp|udp)$/, '');
    return Number(spec.split(':').at(-1));
  });
}

interface DockerfileInstruction {
  keyword: string;
  args: string;
}

/** Dockerfile instructions, with comments dropped and backslash continuations joined, grouped by stage. */
function dockerfileStages(text: string): DockerfileInstruction[][] {
  const logicalLines: string[] = [];
  let pending = '';
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line.startsWith('#') || line === '') {
      continue;
    }
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    logicalLines.push(pending + line);
    pending = '';
  }
  if (pending) logicalLines.push(pending);

  const stages: DockerfileInstruction[][] = [];
  for (const line of logicalLines) {
    const [, keyword = '', args = ''] = /^(\S+)\s*([\s\S]*)$/.exec(line) ?? [];
    const instruction = { keyword: keyword.toUpperCase(), args: args.trim() };
    if (instruction.keyword === 'FROM') stages.push([]);
    stages.at(-1)?.push(instruction);
  }
  return stages;
}

describe('docker-compose.yml', () => {
  const compose: unknown = parse(read('docker-compose.yml'));
  const services = mappingAt(compose, 'services');
  const topLevelVolumes = isMapping(compose) && isMapping(compose.volumes) ? compose.volumes : {};

  it('has postgres and gateway services', () => {
    expect(Object.keys(services)).toEqual(expect.arrayContaining(['postgres', 'gateway']));
  });

  it('keeps postgres data in a declared named volume and health-checks postgres', () => {
    const postgres = mappingAt(services, 'postgres');
    const mount = volumeMounts(postgres).find(({ target }) => target === '/var/lib/postgresql/data');
    expect(mount && isNamedVolume(mount.source), 'a named volume at /var/lib/postgresql/data').toBe(true);
    expect(Object.keys(topLevelVolumes)).toContain(mount!.source);

    const healthcheck = mappingAt(postgres, 'healthcheck');
    expect(JSON.stringify(healthcheck.test)).toContain('pg_isready');
  });

  it('starts the gateway only once postgres is healthy', () => {
    const gateway = mappingAt(services, 'gateway');
    const dependency = mappingAt(mappingAt(gateway, 'depends_on'), 'postgres');
    expect(dependency.condition).toBe('service_healthy');
  });

  it('publishes the gateway on port 4000 and health-checks it', () => {
    const gateway = mappingAt(services, 'gateway');
    expect(publishedContainerPorts(gateway)).toContain(4000);
    expect(JSON.stringify(mappingAt(gateway, 'healthcheck').test)).toContain('/healthz');
  });

  it('keeps the gateway data directory in a declared named volume', () => {
    const gateway = mappingAt(services, 'gateway');
    const environment = environmentOf(gateway);
    const dataDir = withDefaults(environment.get('DATA_DIR') ?? '/data');
    const mount = volumeMounts(gateway).find(({ target }) => target === dataDir);
    expect(mount && isNamedVolume(mount.source), `a named volume at ${dataDir}`).toBe(true);
    expect(Object.keys(topLevelVolumes)).toContain(mount!.source);
  });

  it('points the gateway at the compose postgres', () => {
    const databaseUrl = environmentOf(mappingAt(services, 'gateway')).get('DATABASE_URL') ?? '';
    expect(new URL(withDefaults(databaseUrl)).hostname).toBe('postgres');
  });

  it("passes exactly the config schema's variables to the gateway", () => {
    const names = [...environmentOf(mappingAt(services, 'gateway')).keys()];
    expect([...names].sort()).toEqual([...VARIABLE_NAMES].sort());
  });

  it("falls back to the schema's own default wherever it passes one through", () => {
    const environment = environmentOf(mappingAt(services, 'gateway'));
    // Compose runs production unless told otherwise; `npm start` runs development.
    const deliberate = new Set(['NODE_ENV']);
    for (const variable of SCHEMA_VARIABLES) {
      const passed = /^\$\{([A-Z0-9_]+):-(.*)\}$/.exec(environment.get(variable.name) ?? '');
      if (!passed || passed[1] !== variable.name || deliberate.has(variable.name)) continue;
      expect(passed[2], variable.name).toBe(variable.defaultValue);
    }
  });

  it.skipIf(contractVariables === null)(
    "passes every variable of ../shared/API.md's configuration table",
    () => {
      expect(contractVariables!.length, 'variables found in API.md').toBeGreaterThan(10);
      const names = [...environmentOf(mappingAt(services, 'gateway')).keys()];
      expect(names).toEqual(expect.arrayContaining(contractVariables!));
    },
  );

  it('starts MinIO only with the s3 profile, creates the bucket, and keeps its data in a named volume', () => {
    const minio = mappingAt(services, 'minio');
    expect(minio.profiles).toEqual(['s3']);
    const mount = volumeMounts(minio).find(({ target }) => target === '/data');
    expect(mount && isNamedVolume(mount.source), 'a named volume at /data').toBe(true);
    expect(Object.keys(topLevelVolumes)).toContain(mount!.source);
    const setup = mappingAt(services, 'minio-setup');
    expect(setup.profiles).toEqual(['s3']);
    expect(mappingAt(mappingAt(setup, 'depends_on'), 'minio').condition).toBe('service_healthy');
    expect(JSON.stringify(setup.entrypoint ?? setup.command)).toContain('mc mb');
  });

  it('starts redis only with the scale profile', () => {
    const redis = mappingAt(services, 'redis');
    expect(redis.profiles).toEqual(['scale']);
    expect(JSON.stringify(mappingAt(redis, 'healthcheck').test)).toContain('ping');
  });
});

describe('Dockerfile', () => {
  const stages = dockerfileStages(read('Dockerfile'));
  const runtime = stages.at(-1) ?? [];
  const argsOf = (keyword: string) =>
    runtime.filter((instruction) => instruction.keyword === keyword).map((instruction) => instruction.args);

  it('is a multi-stage build', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
  });

  it('runs the final image as a non-root user', () => {
    const users = argsOf('USER');
    expect(users.length).toBeGreaterThan(0);
    const user = users.at(-1)!.split(':')[0];
    expect(['root', '0']).not.toContain(user);
  });

  it('exposes port 4000', () => {
    expect(argsOf('EXPOSE').flatMap((args) => args.split(/\s+/))).toContainEqual(
      expect.stringMatching(/^4000(\/tcp)?$/),
    );
  });

  it('has a health check against /healthz', () => {
    const healthchecks = argsOf('HEALTHCHECK');
    expect(healthchecks.length).toBeGreaterThan(0);
    expect(healthchecks.at(-1)).not.toMatch(/^NONE$/i);
    expect(healthchecks.at(-1)).toContain('/healthz');
  });

  it('starts the compiled gateway with node itself as PID 1, its collector on the event loop thread', () => {
    expect(JSON.parse(argsOf('CMD').at(-1) ?? 'null')).toEqual([
      'node',
      '--single-threaded-gc',
      'dist/main.js',
    ]);
  });

  it('runs on a pinned release of a Node LTS line that meets package.json engines', () => {
    const base = stages[0]?.find((instruction) => instruction.keyword === 'FROM')?.args ?? '';
    const [, major, minor] = /^node:(\d+)\.(\d+)\.\d+-[a-z]+-slim\b/.exec(base) ?? [];
    expect(base, 'node:<major>.<minor>.<patch>-<debian>-slim').toMatch(/^node:\d+\.\d+\.\d+-/);
    expect(['22', '24']).toContain(major);
    const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
    const [, needMajor, needMinor] = /^>=(\d+)\.(\d+)/.exec(engines) ?? [];
    expect(Number(major) * 1000 + Number(minor)).toBeGreaterThanOrEqual(
      Number(needMajor) * 1000 + Number(needMinor),
    );
    // Every stage builds on that one base.
    for (const stage of stages) expect(stage[0]?.args).toMatch(/^(node:|base|deps)\b/);
  });

  it('compiles in a build stage and ships dist/ without TypeScript tooling', () => {
    const build = stages.find((stage) => stage[0]?.args.endsWith(' AS build')) ?? [];
    expect(
      build.some((instruction) => instruction.keyword === 'RUN' && instruction.args === 'npm run build'),
    ).toBe(true);
    expect(argsOf('COPY')).toContain('--from=build /app/dist ./dist');
    expect(argsOf('COPY').some((args) => /\bsrc\b/.test(args))).toBe(false);
  });
});

describe('.env.example', () => {
  const text = read('.env.example');
  // A commented-out assignment (`# NAME=`) documents a variable whose default is "unset".
  const named = new Set([...text.matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((match) => match[1]!));

  it("names exactly the config schema's variables, and compose's own Postgres password", () => {
    expect([...named].sort()).toEqual([...VARIABLE_NAMES, 'POSTGRES_PASSWORD'].sort());
  });

  it('is what `npm run config:docs` writes', () => {
    expect(text).toBe(envExample());
  });

  it.skipIf(contractVariables === null)(
    "names every variable of ../shared/API.md's configuration table",
    () => {
      expect([...named]).toEqual(expect.arrayContaining(contractVariables!));
    },
  );
});

describe("README's configuration table", () => {
  it('is what `npm run config:docs` writes from the config schema', () => {
    const readme = read('README.md');
    expect(readme).toBe(withReadmeTable(readme));
  });

  it.skipIf(contractVariables === null)(
    "covers every variable of ../shared/API.md's configuration table",
    () => {
      expect(VARIABLE_NAMES).toEqual(expect.arrayContaining(contractVariables!));
    },
  );
});

describe('the config schema', () => {
  it('documents every variable with a meaning', () => {
    for (const variable of SCHEMA_VARIABLES)
      expect(variable.meaning.length, variable.name).toBeGreaterThan(10);
  });
});
