-- Same name as the library project's stg_books: task ids must still be unique.
select 0 as book_id, 'placeholder' as title
