select b.book_id, b.title, count(*) as loans
from {{ ref('fct_loans') }} as f
join {{ ref('stg_books') }} as b using (book_id)
group by 1, 2
