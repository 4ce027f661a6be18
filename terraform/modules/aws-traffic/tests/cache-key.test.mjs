// The CloudFront function's cache key (cache-key.js), run as CloudFront runs it: a script
// whose `handler` receives the viewer request. `node --test` (Node.js 20+), from
// `cargo xtask ci`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const source = readFileSync(new URL('../cache-key.js', import.meta.url), 'utf8');
const context = vm.createContext({});
vm.runInContext(source, context);

// A viewer request as CloudFront hands it over: query string values as the client sent them.
function viewer(query, accept) {
    const querystring = {};
    for (const [name, value] of new URLSearchParams(query)) {
        const encoded = encodeURIComponent(value);
        if (querystring[name] === undefined) {
            querystring[name] = { value: encoded };
        } else {
            const first = querystring[name];
            querystring[name] = { value: first.value, multiValue: [...(first.multiValue ?? [first]), { value: encoded }] };
        }
    }
    const headers = accept === undefined ? {} : { accept: { value: accept } };
    return { request: { method: 'GET', uri: '/graphql', querystring, headers } };
}

function key(query, accept) {
    const request = context.handler(viewer(query, accept));
    return `${request.querystring} | ${request.headers.accept.value}`;
}

const card = 'id=movie-card-v1&variables=' + encodeURIComponent('{"id":"tt0000077"}');

test('parameter order and unknown parameters do not split the cache', () => {
    const reordered = 'variables=' + encodeURIComponent('{"id":"tt0000077"}') + '&utm_source=mail&id=movie-card-v1';
    assert.equal(key(reordered), key(card));
    assert.notEqual(key(card), key('id=movie-card-v1&variables=' + encodeURIComponent('{"id":"tt0000078"}')));
});

test('extensions are cut down to persistedQuery', () => {
    const persisted = { version: 1, sha256Hash: 'movie-card-v1' };
    const apollo = (version) =>
        'variables=' + encodeURIComponent('{"id":"tt0000077"}') + '&extensions=' +
        encodeURIComponent(JSON.stringify({ clientLibrary: { name: '@apollo/client', version }, persistedQuery: persisted }));
    assert.equal(key(apollo('4.0.0')), key(apollo('4.1.0')));
    assert.match(key(apollo('4.0.0')), /^extensions=%7B%22persistedQuery%22/);
    // Without persistedQuery, extensions change nothing and are dropped.
    const plain = card + '&extensions=' + encodeURIComponent('{"clientLibrary":{"name":"x"}}');
    assert.equal(key(plain), key(card));
});

test('extensions that are not JSON are kept, so the gateway refuses them under their own key', () => {
    assert.match(key(card + '&extensions=not-json'), /extensions=not-json/);
});

test('a repeated parameter is kept whole', () => {
    assert.match(key('id=a&id=b'), /id=a&id=b/);
});

test('Accept is the media type the gateway picks from it', () => {
    assert.match(key(card, 'application/graphql-response+json, application/json;q=0.9'), / \| application\/graphql-response\+json$/);
    assert.match(key(card, 'application/json'), / \| application\/json$/);
    assert.match(key(card, '*/*'), / \| application\/json$/);
    assert.match(key(card), / \| application\/json$/);
    assert.match(key(card, 'APPLICATION/GRAPHQL-RESPONSE+JSON'), / \| application\/graphql-response\+json$/);
    // Neither: left for the gateway to refuse (406), keyed apart.
    assert.match(key(card, 'text/html'), / \| text\/html$/);
});

test('documentId is part of the key', () => {
    assert.notEqual(key('documentId=a'), key('documentId=b'));
});
