"""Statements, round trips and store calls of each README example, from one gateway's
/metrics before and after the request (readiness pings excluded). Usage:
python3 statements-5m.py [http://127.0.0.1:18181]"""
import json, sys, time, urllib.request
URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18181"
def scrape():
    text=urllib.request.urlopen(URL+"/metrics").read().decode()
    st=0.0; rt=0.0; calls=0.0
    for line in text.splitlines():
        if line.startswith("store_statements_per_call_sum") and 'op="ping"' not in line: st+=float(line.rsplit(" ",1)[1])
        if line.startswith("store_round_trips_per_call_sum") and 'op="ping"' not in line: rt+=float(line.rsplit(" ",1)[1])
        if line.startswith("store_calls_total") and 'op="ping"' not in line: calls+=float(line.rsplit(" ",1)[1])
    return st, rt, calls
def q(query):
    req=urllib.request.Request(URL+"/graphql", data=json.dumps({"query":query}).encode(), headers={"content-type":"application/json","cache-control":"no-cache"})
    t=time.perf_counter(); body=json.loads(urllib.request.urlopen(req).read()); dt=time.perf_counter()-t
    return body, dt
Q={
 "movie with cast and director": '{ movie(id: "tt0000042") { title year genres rating { average count } cast(first: 3) { character person { name } } crew(job: "Director") { person { name } } } }',
 "search cafe ghost": '{ search(query: "cafe ghost", first: 5) { edges { node { id title year } } } }',
 "search star": '{ search(query: "star", first: 5) { edges { node { title } } pageInfo { hasNextPage endCursor } } }',
 "search the of (common, rare together)": '{ search(query: "the of", first: 20) { edges { node { title } } } }',
 "browse Sci-Fi 1990s by rating": '{ browse(genre: "Sci-Fi", yearFrom: 1990, yearTo: 1999, sort: RATING, first: 10) { edges { node { title year rating { average count weighted } } } } }',
 "browse, no filter, popularity": '{ browse(first: 20) { edges { node { title year } } } }',
 "browse, no filter, release date": '{ browse(sort: RELEASE_DATE, first: 20) { edges { node { title year } } } }',
 "person with filmography": '{ person(id: "nm0000001") { name knownForDepartment filmography(first: 5) { edges { node { movie { title year } character job } } } } }',
 "genres": '{ genres { name movieCount } }',
}
for name, query in Q.items():
    a=scrape(); body, dt=q(query); b=scrape()
    n=len(json.dumps(body.get("data")))
    err=body.get("errors")
    print(f"{name:42s} statements={b[0]-a[0]:4.0f} round_trips={b[1]-a[1]:4.0f} store_calls={b[2]-a[2]:3.0f} {dt*1000:7.1f} ms  {'ERR '+str(err)[:100] if err else ''}")
