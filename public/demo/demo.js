// The live demo: plain browser JavaScript against the public API, nothing the gateway does not offer any app.
// Queries and mutations go over HTTP, the live updates over graphql-ws (its browser build, /demo/graphql-ws.js).

const GRAPHQL_URL = new URL('/graphql', location.href).toString();
const WS_URL = GRAPHQL_URL.replace(/^http/, 'ws');
const HISTORY_PAGE = 5;

const CREATE = `mutation Create($input: CreateAvatarTaskInput!) {
  createAvatarTask(input: $input) {
    __typename
    ... on CreateAvatarTaskSuccess { task { id state version } }
    ... on Error { code message }
    ... on InvalidInputError { field }
  }
}`;
const WATCH = `subscription Watch($id: ID!) {
  avatarTaskUpdated(id: $id) { id state version updatedAt videoUrl failure { code message } }
}`;
const HISTORY = `query History($first: Int!, $after: String) {
  viewer { id }
  avatarTasks(first: $first, after: $after) {
    edges { node { id state createdAt videoUrl } }
    pageInfo { hasNextPage endCursor }
  }
}`;

const $ = (id) => document.getElementById(id);

// The built-in simulator's sample face and 3-second voice, served by the gateway itself: inputs are checked
// before a task is paid for, so they must be files that exist (see the README's "Checked inputs").
for (const [id, sample] of [
  ['image-url', 'face.png'],
  ['audio-url', 'voice.wav'],
]) {
  if (!$(id).value) $(id).value = new URL(`/simulator/samples/${sample}`, location.href).toString();
}
let socket;
let stopWatching = () => {};
let historyCursor = null;

function token() {
  return $('token').value.trim();
}

async function graphql(query, variables) {
  const response = await fetch(GRAPHQL_URL, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token()}` },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(15_000),
  });
  const result = await response.json();
  if (result.errors?.length) {
    const [first] = result.errors;
    throw new Error(`${first.extensions?.code ?? response.status}: ${first.message}`);
  }
  return result.data;
}

/** One socket per token: a new token closes the old socket, whose subscriptions end with it. */
function wsClient() {
  if (socket?.token === token()) return socket.client;
  socket?.client.dispose();
  const current = token();
  const client = globalThis.graphqlWs.createClient({
    url: WS_URL,
    connectionParams: { authorization: `Bearer ${current}` },
    retryAttempts: 3,
  });
  socket = { token: current, client };
  return client;
}

function show(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

async function signIn(event) {
  event?.preventDefault();
  $('get-token').disabled = true;
  try {
    const response = await fetch('/demo/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: $('user').value.trim() }),
      signal: AbortSignal.timeout(10_000),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error?.message ?? `HTTP ${response.status}`);
    $('token').value = body.token;
    await refreshHistory();
  } catch (error) {
    $('viewer').textContent = `No development token: ${error.message}`;
  } finally {
    $('get-token').disabled = false;
  }
}

async function createTask(event) {
  event.preventDefault();
  show($('create-error'), '');
  $('create-task').disabled = true;
  try {
    const data = await graphql(CREATE, {
      input: {
        imageUrl: $('image-url').value.trim(),
        audioUrl: $('audio-url').value.trim(),
        prompt: $('prompt').value,
        model: $('model').value,
        // A fresh key per click: the same key would return the task made before, already finished.
        idempotencyKey: crypto.randomUUID(),
      },
    });
    const result = data.createAvatarTask;
    if (result.__typename !== 'CreateAvatarTaskSuccess') {
      const field = result.field ? ` (${result.field})` : '';
      throw new Error(`${result.code}${field}: ${result.message}`);
    }
    watch(result.task.id);
    await refreshHistory();
  } catch (error) {
    show($('create-error'), error.message);
  } finally {
    $('create-task').disabled = false;
  }
}

function addState(task) {
  const item = document.createElement('li');
  item.className = `state-${task.state}`;
  item.dataset.state = task.state;
  item.textContent = task.state;
  const when = document.createElement('small');
  when.textContent = `v${task.version} · ${new Date(task.updatedAt).toLocaleTimeString()}`;
  item.append(when);
  $('states').append(item);
}

function watch(id) {
  stopWatching();
  $('states').replaceChildren();
  show($('failure'), '');
  $('video').hidden = true;
  $('video').removeAttribute('src');
  $('task-id').textContent = `Task ${id}`;
  let lastVersion = 0;
  stopWatching = wsClient().subscribe(
    { query: WATCH, variables: { id } },
    {
      next: ({ data, errors }) => {
        if (errors?.length) return show($('failure'), errors.map((error) => error.message).join('; '));
        const task = data.avatarTaskUpdated;
        // A client keeps the highest version it has seen.
        if (task.version <= lastVersion) return;
        lastVersion = task.version;
        addState(task);
        if (task.failure) show($('failure'), `${task.failure.code}: ${task.failure.message}`);
        if (task.videoUrl) {
          $('video').src = task.videoUrl;
          $('video').hidden = false;
        }
      },
      error: (error) =>
        show($('failure'), `The live stream failed: ${error.message ?? error.reason ?? error}`),
      complete: () => refreshHistory(),
    },
  );
}

function historyRow(task) {
  const row = document.createElement('tr');
  const cells = [new Date(task.createdAt).toLocaleString(), task.state, task.id];
  for (const [index, value] of cells.entries()) {
    const cell = document.createElement('td');
    cell.textContent = value;
    if (index === 2) cell.className = 'id';
    row.append(cell);
  }
  const video = document.createElement('td');
  if (task.videoUrl) {
    const link = document.createElement('a');
    link.href = task.videoUrl;
    link.textContent = 'play';
    link.target = '_blank';
    link.rel = 'noopener';
    video.append(link);
  }
  row.append(video);
  row.addEventListener('click', () => watch(task.id));
  return row;
}

async function refreshHistory(more = false) {
  if (!token()) return;
  try {
    const data = await graphql(HISTORY, { first: HISTORY_PAGE, after: more ? historyCursor : null });
    $('viewer').textContent = `Signed in as ${data.viewer.id}.`;
    const rows = data.avatarTasks.edges.map((edge) => historyRow(edge.node));
    if (more) $('history-rows').append(...rows);
    else $('history-rows').replaceChildren(...rows);
    historyCursor = data.avatarTasks.pageInfo.endCursor;
    $('more-history').hidden = !data.avatarTasks.pageInfo.hasNextPage;
  } catch (error) {
    $('viewer').textContent = `Not signed in: ${error.message}`;
  }
}

$('token-form').addEventListener('submit', signIn);
$('token').addEventListener('change', () => refreshHistory());
$('create-form').addEventListener('submit', createTask);
$('refresh-history').addEventListener('click', () => refreshHistory());
$('more-history').addEventListener('click', () => refreshHistory(true));
