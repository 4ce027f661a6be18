// Marquee's cache key at CloudFront (viewer request), the same as the rig's Varnish edge
// (regions/rig/edge.vcl) and the README's "Caching" section give CDN operators:
// - only the parameters that change a GraphQL response are kept (query, id, documentId,
//   operationName, variables, extensions), sorted, so their order never splits the cache;
// - `extensions` is cut down to `persistedQuery` (client libraries add members of their own,
//   such as Apollo's `clientLibrary`, that change nothing);
// - `Accept` is normalised to the media type the gateway's negotiation picks from it (an
//   `Accept` naming neither is left alone: the gateway answers it with 406).
// Anything else about the request is left to the gateway, which answers malformed input with
// a typed GraphQL error.

var KEPT = ['documentId', 'extensions', 'id', 'operationName', 'query', 'variables'];
var GRAPHQL_RESPONSE = 'application/graphql-response+json';

function decoded(value) {
    try {
        return decodeURIComponent(value.replace(/\+/g, ' '));
    } catch (e) {
        return null;
    }
}

function persistedOnly(value) {
    var text = decoded(value);
    if (text === null) {
        return value;
    }
    try {
        var extensions = JSON.parse(text);
        if (extensions === null || typeof extensions !== 'object' || Array.isArray(extensions)) {
            return value;
        }
        if (extensions.persistedQuery === undefined) {
            return null;
        }
        return encodeURIComponent(JSON.stringify({ persistedQuery: extensions.persistedQuery }));
    } catch (e) {
        // Not JSON: the gateway refuses it; keep it so the refusal is keyed apart.
        return value;
    }
}

function handler(event) {
    var request = event.request;
    var pairs = [];
    KEPT.forEach(function (name) {
        var parameter = request.querystring[name];
        if (parameter === undefined) {
            return;
        }
        // A repeated parameter is kept whole (the gateway refuses it).
        var values = parameter.multiValue ? parameter.multiValue.map(function (v) { return v.value; }) : [parameter.value];
        values.forEach(function (value) {
            var kept = name === 'extensions' ? persistedOnly(value) : value;
            if (kept !== null) {
                pairs.push(name + '=' + kept);
            }
        });
    });
    request.querystring = pairs.join('&');

    var accept = request.headers.accept ? request.headers.accept.value : '';
    if (/application\/graphql-response\+json/i.test(accept)) {
        request.headers.accept = { value: GRAPHQL_RESPONSE };
    } else if (accept === '' || /(application\/json|\*\/\*|application\/\*)/i.test(accept)) {
        request.headers.accept = { value: 'application/json' };
    }
    return request;
}
